"""The standard evaluation protocols, one versioned protocol per environment.

A protocol is the contract that makes two numbers comparable: the paper's test tasks, how many
in-context episodes, which seeds, how actions are chosen and what is measured. A version is
frozen: its test tasks (by hash) and its reference returns (random = 0, oracle = 100 on the
normalized scale) are pinned here, and `tests/test_harness.py` checks the pins against the env
family, so a change to an env that would move the goalposts fails loudly instead of silently
re-scoring the leaderboard. Changing any of these facts means a new version (`darkroom/v2`);
old versions move to `RETIRED` so their entries are rejected with a message saying so.

This module imports neither torch nor the envs at import time: the leaderboard validates
entries with the pinned facts alone. The env family is loaded only to run an evaluation.

Choices, with their source:
- Test tasks: `get_family(env).split().test`, the official split (gridworld/utils.py,
  `env_split_seed`, `train_env_ratio` in gridworld/cfg/env/*.yaml), in its shuffled order.
- Episodes: 50. The official evaluate.py runs `horizon * 50` steps for AD/DPT/IDT and
  `horizon * 100` for DICP; the paper's comparisons (e.g. Darkroom return at episodes 20 and 50)
  lie within the first 50, so 50 is the one budget every agent gets.
- Seeds: 0-4. A seed is one replica of every test task; all randomness of a run flows from the
  seed list, so re-running with the same seeds reproduces every curve.
- Actions are sampled from the agent's policy (the official `sample=True`), not argmax.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np

from icrl_bench.errors import IcrlBenchError, unknown

PROTOCOL_PATTERN = re.compile(r"^(?P<env>[a-z0-9]+(?:-[a-z0-9]+)*)/v(?P<version>[0-9]+)$")

MEASURED = (
    "per-episode return of every (seed, test task) over the in-context episodes, from an empty "
    "context; success per episode where the env has it (Dark Key-to-Door: the door reached); "
    "wall time per action and forward passes per action"
)


@dataclass(frozen=True)
class EvalProtocol:
    """One frozen evaluation protocol.

    Attributes:
        env: env family name (`icrl_bench.envs.FAMILIES`).
        version: bumped whenever any pinned fact changes.
        n_test_tasks: number of test tasks (pinned).
        test_tasks_sha256: sha256 of the test tasks' parameters as little-endian int64 [n, k].
        random_return: exact expected episode return of uniform random actions, mean over
            test tasks (computed by dynamic programming over the grid; see `reference_returns`).
        oracle_return: the optimal policy's episode return, mean over test tasks.
        n_episodes: in-context episodes per run.
        seeds: default seeds, one replica of every test task each.
        sample_actions: agents sample from their policy instead of taking the argmax.
        final_window: episodes averaged by the final return.
        has_success: episodes have a success flag besides the return.
    """

    env: str
    version: int
    n_test_tasks: int
    test_tasks_sha256: str
    random_return: float
    oracle_return: float
    n_episodes: int = 50
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    sample_actions: bool = True
    final_window: int = 5
    has_success: bool = False
    measured: str = field(default=MEASURED, repr=False)

    @property
    def name(self) -> str:
        return f"{self.env}/v{self.version}"

    def test_tasks(self) -> np.ndarray:
        """Canonical indices of the test tasks [n_test_tasks], in the paper's order."""
        from icrl_bench.envs import get_family

        return get_family(self.env).split().test

    def test_task_params(self) -> np.ndarray:
        """Parameters of the test tasks [n_test_tasks, k] int64."""
        from icrl_bench.envs import get_family

        return get_family(self.env).task_params()[self.test_tasks()]

    def describe(self) -> dict:
        """The protocol as plain JSON data (what a results file records)."""
        return {
            "name": self.name,
            "env": self.env,
            "version": self.version,
            "n_episodes": self.n_episodes,
            "seeds": list(self.seeds),
            "sample_actions": self.sample_actions,
            "final_window": self.final_window,
            "n_test_tasks": self.n_test_tasks,
            "test_tasks_sha256": self.test_tasks_sha256,
            "references": {"random": self.random_return, "oracle": self.oracle_return},
            "measured": self.measured,
        }


def task_params_sha256(params: np.ndarray | list) -> str:
    """The hash a protocol pins its test tasks by: sha256 of int64 little-endian bytes [n, k]."""
    array = np.ascontiguousarray(np.asarray(params, dtype="<i8"))
    if array.ndim != 2:
        raise IcrlBenchError(f"test task parameters must be a 2-D list [task][param], got {array.ndim}-D.")
    return hashlib.sha256(f"{array.shape}".encode() + array.tobytes()).hexdigest()


# Pinned facts; `python -m icrl_bench.protocols` prints them recomputed from the env families.
PROTOCOLS: dict[str, EvalProtocol] = {
    p.name: p
    for p in (
        EvalProtocol(
            env="darkroom",
            version=1,
            n_test_tasks=8,
            test_tasks_sha256="af97466de667919c17dd09f5776fce6e1954913a168dd0c7de412204d3978250",
            random_return=0.325436139258,
            oracle_return=17.25,
        ),
        EvalProtocol(
            env="darkroom-permuted",
            version=1,
            n_test_tasks=12,
            test_tasks_sha256="53a71265299ebbdf4529ead46512b1a8507162f4882710e54e1d1ef34ba80767",
            random_return=0.024310383357,
            oracle_return=35.0,
        ),
        EvalProtocol(
            env="dark-key-to-door",
            version=1,
            n_test_tasks=328,
            test_tasks_sha256="d919bdf65aaa1e276851fa67552b52a1380049144b569f79e73bc1cad03cf52a",
            random_return=0.284343325583,
            oracle_return=2.0,
            has_success=True,
        ),
    )
}

# Versions no longer accepted, with the reason (none yet).
RETIRED: dict[str, str] = {}


def current(env: str) -> EvalProtocol:
    """The newest protocol of env family `env`."""
    versions = [p for p in PROTOCOLS.values() if p.env == env]
    if not versions:
        raise unknown("environment", env, sorted({p.env for p in PROTOCOLS.values()}))
    return max(versions, key=lambda p: p.version)


def get_protocol(name: str) -> EvalProtocol:
    """A protocol by `env/vN`, or the newest one of an env given by its bare name."""
    if name in PROTOCOLS:
        return PROTOCOLS[name]
    if name in RETIRED:
        raise IcrlBenchError(f"protocol {name} is retired ({RETIRED[name]}); re-run the evaluation under {current(name.split('/')[0]).name}.")
    match = PROTOCOL_PATTERN.match(name)
    if match is None:
        return current(name)
    env = match["env"]
    newest = current(env)  # raises for an unknown env
    raise IcrlBenchError(
        f"unknown protocol version {name}; the current one is {newest.name}: re-run `icrl-bench evaluate --env {env}`."
    )


# --- reference returns, computed exactly (used to pin the protocols and by the tests) ---------


def reference_returns(env: str) -> tuple[np.ndarray, np.ndarray]:
    """Expected episode return of uniform random actions and of the oracle, per test task.

    The random policy's expectation is exact: the distribution over (cell, key phase) is pushed
    through the grid's dynamics step by step, so no sampling noise enters the normalized score.
    Uniform random is the same policy under any action permutation, so Darkroom-Permuted needs
    only its start and goal.
    """
    from icrl_bench.envs import get_family
    from icrl_bench.envs.grid import GRID_SIZE, MOVES

    family = get_family(env)
    params = family.task_params()[family.split().test]
    batched = family.batched(params)
    start = batched.start.numpy()
    goal = batched.goal.numpy()
    key = None if batched.key is None else batched.key.numpy()
    n_cells = GRID_SIZE * GRID_SIZE
    coords = np.stack(np.meshgrid(np.arange(GRID_SIZE), np.arange(GRID_SIZE), indexing="ij"), -1).reshape(-1, 2)
    moved = np.clip(coords[:, None, :] + MOVES[None], 0, GRID_SIZE - 1)  # [cell, action, 2]
    next_cell = moved[..., 0] * GRID_SIZE + moved[..., 1]  # [cell, action]
    flat = lambda xy: xy[:, 0] * GRID_SIZE + xy[:, 1]  # noqa: E731
    rows = np.arange(len(params))
    # prob[task, phase, cell]; phase 0: no key (or no key in this env), 1: key held, 2: door reached.
    prob = np.zeros((len(params), 3, n_cells))
    prob[rows, 0, flat(start)] = 1.0
    expected = np.zeros(len(params))
    for _ in range(family.horizon):
        new = np.zeros_like(prob)
        for action in range(MOVES.shape[0]):
            np.add.at(new, (slice(None), slice(None), next_cell[:, action]), prob / MOVES.shape[0])
        if key is None:
            expected += new[rows, 0, flat(goal)]
        else:
            # As BatchedGridWorld.step: the door pays only if the key was held before this step.
            door = new[rows, 1, flat(goal)].copy()
            new[rows, 1, flat(goal)] = 0.0
            new[rows, 2, flat(goal)] += door
            got_key = new[rows, 0, flat(key)].copy()
            new[rows, 0, flat(key)] = 0.0
            new[rows, 1, flat(key)] += got_key
            expected += door + got_key
        prob = new
    return expected, family.max_return(params).astype(np.float64)


def pinned_facts(env: str) -> dict:
    """The facts a protocol pins, recomputed from the env family (to write or check the pins)."""
    from icrl_bench.envs import get_family

    family = get_family(env)
    params = family.task_params()[family.split().test]
    random_return, oracle_return = reference_returns(env)
    return {
        "n_test_tasks": len(params),
        "test_tasks_sha256": task_params_sha256(params),
        "random_return": round(float(random_return.mean()), 12),
        "oracle_return": round(float(oracle_return.mean()), 12),
    }


if __name__ == "__main__":
    for _env in sorted({p.env for p in PROTOCOLS.values()}):
        print(_env, pinned_facts(_env))

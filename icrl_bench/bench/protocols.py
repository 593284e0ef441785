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
- Validation goals (`EvalProtocol.on_validation_goals`, `icrl-bench evaluate --goals validation`):
  the same protocol on the split's first train goals instead of its test goals, as many as it
  has test goals. Choosing between training runs or recipes by test-goal return would tune on
  the test set. A run trained with `train.hold_out_validation_goals` never sees these goals, so
  its in-context return on them is a held-out signal a choice may look at. (For a run trained on
  every train goal they are in-distribution, and measured, they rank runs poorly:
  docs/training.md.) Their results are never standard and the leaderboard refuses them (grid
  worlds only: their goals have exact references).

Meta-World (`metaworld-ml1-<task>/v1` for each of the 50 ML1 tasks, `metaworld-ml10/v1`), following
the official metaworld/evaluate.py and model/ad.py `evaluate_in_context`:
- Test tasks: ML1's 50 test goal variations (`ML1(task, seed=0).test_tasks`, canonical tasks
  50..99). ML10: its 5 test task types x the first 10 goals of each (50 tasks, the size of an
  ML1 protocol; all 250 would cost 5x the env steps for little more information). Pinned by the
  hash of their float32 parameters (goal xyz; ML10: type index first) rounded to 1e-4 (0.1 mm).
  Tasks that share a goal space share goals (reach and pick-place: the same hash), which is
  harmless: a hash is only ever compared within its own protocol.
- Episodes: the official budget per task, `OFFICIAL_EPISODES` (reach 100, push 300, pick-place
  and peg-insert-side 2,000, every other task 200; ML10 too), 100 steps each (`TimeLimit(100)`).
- Seeds: 0-2, not 5: Meta-World runs one MuJoCo env per (seed, task) row on one CPU core, ~0.45
  ms of CPU per env step with resets included (measured: `random` on reach, 1.5M env steps, 11
  min of CPU, 18 min wall on a busy 2-core machine; 150 envs hold ~3.6 GB). Three seeds make
  pick-place and peg-insert-side (30M env steps) a ~4-hour run; five would make it ~6.
- Headline: success rate in %, DICP's best-so-far measure (a task counts as solved from its
  first successful episode on; success = `info["success"]` at any step). There is no exact
  random or optimal return, so returns are reported raw and nothing is normalized; the random
  agent's row is measured (`icrl-bench evaluate --agent random`), not pinned.
- Version: `metaworld` 3.x ships the v3 tasks only; the paper used v2. The v3 tasks fix v2's
  reward and physics bugs, so numbers are comparable to the paper's in kind, not to the digit.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from icrl_bench.bench import metrics
from icrl_bench.bench.protocol_references import ORACLE_RETURNS, RANDOM_RETURNS
from icrl_bench.errors import IcrlBenchError, unknown

VALIDATION_GOALS_SUFFIX = ":validation-goals"


def names_validation_goals(name: str) -> bool:
    """Whether a protocol name (or `--env` value) names the validation goals: they choose runs, never rank them."""
    return name.endswith(VALIDATION_GOALS_SUFFIX)
PROTOCOL_PATTERN = re.compile(r"^(?P<env>[a-z0-9]+(?:-[a-z0-9]+)*)/v(?P<version>[0-9]+)$")

MEASURED = (
    "per-episode return of every (seed, test task) over the in-context episodes, from an empty "
    "context; success per episode where the env has it (Dark Key-to-Door: the door reached); "
    "wall time per action and forward passes per action"
)
MEASURED_METAWORLD = (
    "per-episode return and success (info['success'] at any step) of every (seed, test task) over "
    "the in-context episodes of 100 steps, from an empty context; Meta-World v3 tasks (the paper "
    "used v2); wall time per action and forward passes per action"
)


@dataclass(frozen=True)
class EvalProtocol:
    """One frozen evaluation protocol.

    Attributes:
        env: env family name (`icrl_bench.envs.get_family`).
        version: bumped whenever any pinned fact changes.
        n_test_tasks: number of test tasks (pinned).
        test_tasks_sha256: `task_params_sha256` of the test tasks' parameters [n, k].
        horizon: steps per episode (every episode runs to it).
        random_return: exact expected episode return of uniform random actions, mean over
            test tasks (computed by dynamic programming over the grid; see `reference_returns`);
            None where no exact value exists (Meta-World).
        oracle_return: the optimal policy's episode return, mean over test tasks; None likewise.
        random_returns, oracle_returns: the same per test task, in the protocol's order (pinned
            in `icrl_bench.bench.protocol_references`): normalized scores are per task.
        n_episodes: in-context episodes per run.
        seeds: default seeds, one replica of every test task each.
        sample_actions: agents sample from their policy instead of taking the argmax.
        final_window: episodes averaged by the final return.
        has_success: episodes have a success flag besides the return.
        param_decimals: None for integer task parameters; else they are float and hashed
            rounded to this many decimals.
        goals_per_type: ML10 only: test tasks kept per test task type (the first ones).
        max_episode_return: upper bound of one episode's return where no oracle bounds it
            (Meta-World's rewards lie in [0, 10] per step).
        goals: "test" (the protocol), or "validation": the split's first `n_test_tasks` train
            tasks, with their own hash and references (`on_validation_goals`; choosing runs only).
    """

    env: str
    version: int
    n_test_tasks: int
    test_tasks_sha256: str
    horizon: int
    random_return: float | None = None
    oracle_return: float | None = None
    random_returns: tuple[float, ...] | None = field(default=None, repr=False)
    oracle_returns: tuple[float, ...] | None = field(default=None, repr=False)
    n_episodes: int = 50
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    sample_actions: bool = True
    final_window: int = 5
    has_success: bool = False
    param_decimals: int | None = None
    goals_per_type: int | None = None
    max_episode_return: float | None = None
    measured: str = field(default=MEASURED, repr=False)
    goals: str = "test"

    @property
    def name(self) -> str:
        return f"{self.env}/v{self.version}" + (VALIDATION_GOALS_SUFFIX if self.goals == "validation" else "")

    @property
    def headline(self) -> str:
        """The summary metric that ranks entries: the normalized score where exact references
        exist, else the best-so-far success rate."""
        return "normalized_score" if self.random_return is not None else "best_success_rate"

    def test_tasks(self) -> np.ndarray:
        """Canonical indices of the test tasks [n_test_tasks], in the paper's order."""
        from icrl_bench.envs import get_family

        family = get_family(self.env)
        if self.goals == "validation":
            return family.split().train[: self.n_test_tasks]
        test = family.split().test
        if self.goals_per_type is None:
            return test
        types = family.task_params()[test, 0]
        return np.concatenate([test[types == kind][: self.goals_per_type] for kind in dict.fromkeys(types.tolist())])

    def on_validation_goals(self) -> EvalProtocol:
        """This protocol on its validation goals, the split's first `n_test_tasks` train goals,
        instead of its test goals (what `train.hold_out_validation_goals` keeps out of training).

        Same episodes, seeds and horizon; the goals' hash and exact references are computed here.
        """
        if self.goals == "validation":
            return self
        if self.random_returns is None:
            raise IcrlBenchError(f"{self.name} has no validation-goal evaluation: it exists for the grid worlds, whose goals have exact "
                                 "reference returns; evaluate on its test goals (without --goals validation).")
        validation = replace(self, goals="validation")
        params = validation.test_task_params()
        random_returns, oracle_returns = reference_returns(self.env, params)
        return replace(validation, n_test_tasks=len(params), test_tasks_sha256=validation.tasks_sha256(params),
                       random_return=round(float(random_returns.mean()), 12), oracle_return=round(float(oracle_returns.mean()), 12),
                       random_returns=tuple(round(float(v), 12) for v in random_returns),
                       oracle_returns=tuple(round(float(v), 12) for v in oracle_returns))

    def test_task_params(self) -> np.ndarray:
        """Parameters of the test tasks [n_test_tasks, k] (int64 grid cells, float32 goals)."""
        from icrl_bench.envs import get_family

        return get_family(self.env).task_params()[self.test_tasks()]

    def tasks_sha256(self, params: np.ndarray | list) -> str:
        """The hash this protocol pins its test tasks by."""
        return task_params_sha256(params, self.param_decimals)

    def task_references(self, n_tasks: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Random and oracle returns of the first `n_tasks` test tasks (default: all) [n_tasks] each.

        A smoke run (`--tasks N`) runs the first N test tasks, so their references are the first N.
        """
        if self.random_returns is None or self.oracle_returns is None:
            raise IcrlBenchError(f"{self.name} has no reference returns: it is scored by success, not by a normalized score.")
        n_tasks = self.n_test_tasks if n_tasks is None else n_tasks
        if not 1 <= n_tasks <= self.n_test_tasks:
            raise IcrlBenchError(f"{self.name} has {self.n_test_tasks} test tasks; a run of {n_tasks} cannot be scored against it.")
        return np.asarray(self.random_returns[:n_tasks]), np.asarray(self.oracle_returns[:n_tasks])

    def summarize(self, returns: np.ndarray, success: np.ndarray | None) -> dict:
        """Every standard metric of a run under this protocol (`icrl_bench.bench.metrics`).

        Normalized scores use each test task's own references (the run's first tasks, for a
        smoke run of fewer tasks).
        """
        if self.headline == "normalized_score":
            random_returns, oracle_returns = self.task_references(np.shape(returns)[1])
            return metrics.summarize(returns, random_returns, oracle_returns, success, self.final_window)
        if success is None:
            raise IcrlBenchError(f"{self.name} is scored by success, but the run recorded none.")
        return metrics.summarize_success(returns, success, self.horizon, self.final_window)

    def references(self) -> dict[str, float]:
        """The pinned reference returns (empty where there are none)."""
        if self.random_return is None or self.oracle_return is None:
            return {}
        return {"random": self.random_return, "oracle": self.oracle_return}

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
            "horizon": self.horizon,
            "headline": self.headline,
            "references": self.references(),
            "measured": self.measured,
        }


def task_params_sha256(params: np.ndarray | list, decimals: int | None = None) -> str:
    """The hash a protocol pins its test tasks by: sha256 of int64 little-endian bytes [n, k].

    Integer parameters (grid cells) are hashed as they are; float ones (`decimals` given) as
    float32 rounded to `decimals` places and scaled to integers, so the float64 of a JSON file
    and the float32 of the env hash alike.
    """
    if decimals is None:
        values = np.asarray(params)
        if values.dtype.kind == "f" and (values != np.round(values)).any():
            raise IcrlBenchError("these test task parameters must be whole numbers (grid cells); the file's are not.")
        array = values.astype("<i8")
    else:
        array = np.round(np.asarray(params, dtype=np.float32).astype(np.float64) * 10**decimals).astype("<i8")
    array = np.ascontiguousarray(array)
    if array.ndim != 2:
        raise IcrlBenchError(f"test task parameters must be a 2-D list [task][param], got {array.ndim}-D.")
    return hashlib.sha256(f"{array.shape}".encode() + array.tobytes()).hexdigest()


# The official metaworld/evaluate.py's in-context episodes per ML1 task; any other task: 200.
OFFICIAL_EPISODES = {"reach": 100, "push": 300, "pick-place": 2000, "peg-insert-side": 2000}
OFFICIAL_OTHER_EPISODES = 200
METAWORLD_MAX_STEP_REWARD = 10.0  # Meta-World's rewards lie in [0, 10] per step

# Pinned hashes of the Meta-World protocols' test tasks (ML1_TASKS order, then ML10).
METAWORLD_TEST_TASKS_SHA256: dict[str, str] = {
    "metaworld-ml1-assembly": "7277bffe90faf65fe8e851d522afbb5682a3f6decf229112a8b518c6b4b5d47b",
    "metaworld-ml1-basketball": "56b86c72cabc9a5506d29a3152079dc888ac2baa75c0fef71142e610bb7c9ad6",
    "metaworld-ml1-bin-picking": "4c04dad33cc0ff24e7cb8552aa006246577e2701cfdfc251ff383c509e428997",
    "metaworld-ml1-box-close": "6cd5d896ba642ccf680ced937e5dcf1ae383f3c0992d7b3282daebc9c3879dd0",
    "metaworld-ml1-button-press-topdown": "d1a3b30e11ca2c57111201ab71cf057420e94b4efbdda96e0dde749a5629dfbb",
    "metaworld-ml1-button-press-topdown-wall": "d1a3b30e11ca2c57111201ab71cf057420e94b4efbdda96e0dde749a5629dfbb",
    "metaworld-ml1-button-press": "f0308782673fb57c0c11c91531a60b1f86baf7d4210d0a6eec09202544a10333",
    "metaworld-ml1-button-press-wall": "b8a8ed352a60690e33b54104708d1afe81f4cf2edf6acddf160aa649bf7f624d",
    "metaworld-ml1-coffee-button": "e57fb90aa2990c214954d4b3e8deca0147aba91b6df6c90443393de6602eb13f",
    "metaworld-ml1-coffee-pull": "f890a0c1386bf6755589261bb55125ffa4fcef7e6dc593e944545b665d26ad7e",
    "metaworld-ml1-coffee-push": "d6496201c2a5c7775b32f0ef9c7e11791cc73a9b0d158f10e53170793d927938",
    "metaworld-ml1-dial-turn": "29d3a0549153a8ff1e136f4026ab2209f27bb8b8aee7e09ebb00631301e5b15b",
    "metaworld-ml1-disassemble": "edd39d3e7c7f72ce9c8bb0857f578591eb7dfde9748e8ad08c7d4d7f0c8bf04a",
    "metaworld-ml1-door-close": "370d9978e6609002c5724e6ab68ab099d2ac41b049830596bf9ca1dfb92285ac",
    "metaworld-ml1-door-lock": "c65e8f01f27ec19ebe68855c8cc5f44494e279ac52673358cc5b7cee0a89e73b",
    "metaworld-ml1-door-open": "972983f392f6474a758c30e0f0b8da4f4088faa956f6db42645bf64eb17a2479",
    "metaworld-ml1-door-unlock": "c87f2cd5092c360506ff5ca81874d108aaeefdc1942d05a21b28375a304e39eb",
    "metaworld-ml1-hand-insert": "e143e6957d2769b0350720b7d4ded87869689db49967324e7c0e714b52e7416c",
    "metaworld-ml1-drawer-close": "2bd2de692c9ea362e0921d2026da5c803a068dce348518524b7644c52e8185e1",
    "metaworld-ml1-drawer-open": "2c7ca200a3618b2690e6ac7849b5d9389b4920a61c27a51f695df4fcf10e1967",
    "metaworld-ml1-faucet-open": "f61454091982b3640d93c6f0d5b3fbeddabf911b23c0ff76ac9711aab91c123e",
    "metaworld-ml1-faucet-close": "c4053c32f4c2deb3fbf6dd841e5a40a09c5a64dee0dd1c98db8d55cc14d16d01",
    "metaworld-ml1-hammer": "ff6ce56cd5e3f0c9434b6829e26294f9215f81286c5f8dcee1f601aab7ff497e",
    "metaworld-ml1-handle-press-side": "7c883f2ff5baa8097e8db5d1aac0cc6f283e8ffdce23857cc485821072577394",
    "metaworld-ml1-handle-press": "6354db0c64637082bd0638084043ac3002e121144d66589c055b940eb6abbaf0",
    "metaworld-ml1-handle-pull-side": "0b916c04cd0a1c84d0c36a7b8dbe018a14398d58e0fb9b979f9c4081d5dce25b",
    "metaworld-ml1-handle-pull": "0237962138e463d7f2dd06a48ca1b90f174a4f753cad66777b7baf1e791d0226",
    "metaworld-ml1-lever-pull": "3ee4ea7ea2fe0d8dfd28aa041b3a0808f6f54c7b26d095df5a45a33ab25a51c7",
    "metaworld-ml1-pick-place-wall": "cde3f0edf822ea07f1d17717f43d6b9433fdc9372822c0bc8f43fab2fe36970c",
    "metaworld-ml1-pick-out-of-hole": "89d7836a585ae053c99cb6b74429c55e06fcfc556af20ae551d7713123ac3f12",
    "metaworld-ml1-pick-place": "eb0cf539daf3408cfe6c5a40bed698eb2dd9674261be79ff706eb5f1eedfaaa6",
    "metaworld-ml1-plate-slide": "ecfa16254ec18d63730820cd68345ae9c14f4714a6e3234961ac59165b3f787d",
    "metaworld-ml1-plate-slide-side": "48823c5cdc5933320b7e035e16c95c54019f8c32e85427d656c46eed80b9d20a",
    "metaworld-ml1-plate-slide-back": "213c205575cb80344b554fc132598684cfb1b977da61f50a440af907321309ba",
    "metaworld-ml1-plate-slide-back-side": "2f01dda002572b7c2049aa547df193b8f9516d38a5f0a1e1fdd877205f246096",
    "metaworld-ml1-peg-insert-side": "c88bffbdb35018d40b4d9a3d6baa0e5883df2126ce907a0d4ce458082006da66",
    "metaworld-ml1-peg-unplug-side": "5482268b35d8f85b391f48af7e0432205deb9144f0d3f91572359d54d271a0c9",
    "metaworld-ml1-soccer": "386d62d42f518473d61219018b05e71eb3cf6157e9a7383daa3a54b8360fa5b4",
    "metaworld-ml1-stick-push": "373928969e54aa8b973c237285b319610d1cb4bb4f911e08f0bf267dd3dc6638",
    "metaworld-ml1-stick-pull": "08223874af9e7b05974393deead9f2e7230f96f881b117a1e923231fce2a5cfe",
    "metaworld-ml1-push": "c193d3bab9bcb08b956103a7325c388f31ae7b9bff033238003394bd4bc32344",
    "metaworld-ml1-push-wall": "f2f490c99aa881dc683cd1e741161bb2249362ff67d323b5b7bf0994232ccf16",
    "metaworld-ml1-push-back": "93c335af3831c6c8f31f06ba149a0094b9a39a5c05dddccb1d519f0203653f9a",
    "metaworld-ml1-reach": "eb0cf539daf3408cfe6c5a40bed698eb2dd9674261be79ff706eb5f1eedfaaa6",
    "metaworld-ml1-reach-wall": "cde3f0edf822ea07f1d17717f43d6b9433fdc9372822c0bc8f43fab2fe36970c",
    "metaworld-ml1-shelf-place": "8b126cfa8add0d98eb0ae6bb8d1cd4bc4fa643afb323b2612ebdc1df6de81d63",
    "metaworld-ml1-sweep-into": "d7ac46850fdffbc42d4d8aeb01116d83d9bbaac3f277ed16525c0ab1bf60d5e7",
    "metaworld-ml1-sweep": "e5f2180280a96f20b3252197465955d8e192aa4c69b6741427e5c7f3b4b0757c",
    "metaworld-ml1-window-open": "4d5aa16203887775e368b21e514a349d7cf15bebf43e498d520e1dd47740430a",
    "metaworld-ml1-window-close": "db8cd8085898e0adc66957c74ed38014a16193ef7d08d6e3e7d0f58fc37246ab",
    "metaworld-ml10": "a6a8c8830a76a80884b1a7dcdcb2c984ecc07f9559110c5e737b988cd1f27227",
}


def _metaworld(env: str, test_tasks_sha256: str) -> EvalProtocol:
    """A Meta-World protocol: everything but its test tasks is the same for every task."""
    horizon = 100
    return EvalProtocol(
        env=env,
        version=1,
        n_test_tasks=50,
        test_tasks_sha256=test_tasks_sha256,
        horizon=horizon,
        n_episodes=OFFICIAL_EPISODES.get(env.removeprefix("metaworld-ml1-"), OFFICIAL_OTHER_EPISODES),
        seeds=(0, 1, 2),
        has_success=True,
        param_decimals=4,
        goals_per_type=10 if env == "metaworld-ml10" else None,
        max_episode_return=METAWORLD_MAX_STEP_REWARD * horizon,
        measured=MEASURED_METAWORLD,
    )


# Pinned facts; `python -m icrl_bench.bench.protocols` recomputes them from the env families.
PROTOCOLS: dict[str, EvalProtocol] = {
    p.name: p
    for p in (
        EvalProtocol(
            env="darkroom",
            version=1,
            n_test_tasks=8,
            test_tasks_sha256="af97466de667919c17dd09f5776fce6e1954913a168dd0c7de412204d3978250",
            horizon=20,
            random_return=0.325436139258,
            oracle_return=17.25,
            random_returns=RANDOM_RETURNS["darkroom/v1"],
            oracle_returns=ORACLE_RETURNS["darkroom/v1"],
        ),
        EvalProtocol(
            env="darkroom-permuted",
            version=1,
            n_test_tasks=12,
            test_tasks_sha256="53a71265299ebbdf4529ead46512b1a8507162f4882710e54e1d1ef34ba80767",
            horizon=50,
            random_return=0.024310383357,
            oracle_return=35.0,
            random_returns=RANDOM_RETURNS["darkroom-permuted/v1"],
            oracle_returns=ORACLE_RETURNS["darkroom-permuted/v1"],
        ),
        EvalProtocol(
            env="dark-key-to-door",
            version=1,
            n_test_tasks=328,
            test_tasks_sha256="d919bdf65aaa1e276851fa67552b52a1380049144b569f79e73bc1cad03cf52a",
            horizon=50,
            random_return=0.284343325583,
            oracle_return=2.0,
            random_returns=RANDOM_RETURNS["dark-key-to-door/v1"],
            oracle_returns=ORACLE_RETURNS["dark-key-to-door/v1"],
            has_success=True,
        ),
        *(_metaworld(env, sha256) for env, sha256 in METAWORLD_TEST_TASKS_SHA256.items()),
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


def validation_goals(env: str) -> np.ndarray:
    """Canonical indices of env family `env`'s validation goals (`EvalProtocol.on_validation_goals`),
    what `train.hold_out_validation_goals` keeps out of training."""
    protocol = current(env)
    if protocol.random_returns is None:
        raise IcrlBenchError(f"{env} has no validation goals (the grid worlds have them); train without train.hold_out_validation_goals.")
    return protocol.on_validation_goals().test_tasks()


def get_protocol(name: str) -> EvalProtocol:
    """A protocol by `env/vN`, or the newest one of an env given by its bare name (either with
    `:validation-goals`: that protocol on its validation goals, `EvalProtocol.on_validation_goals`)."""
    if names_validation_goals(name):
        return get_protocol(name.removesuffix(VALIDATION_GOALS_SUFFIX)).on_validation_goals()
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


def reference_returns(env: str, params: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Expected episode return of uniform random actions and of the oracle, per test task (or per
    task of `params` [n, k]).

    The random policy's expectation is exact: the distribution over (cell, key phase) is pushed
    through the grid's dynamics step by step, so no sampling noise enters the normalized score.
    Uniform random is the same policy under any action permutation, so Darkroom-Permuted needs
    only its start and goal.
    """
    from icrl_bench.envs import get_family
    from icrl_bench.envs.grid import GRID_SIZE, MOVES

    family = get_family(env)
    if params is None:
        params = family.task_params()[family.split().test]
    batched = family.batched(params)
    start = batched.start.numpy()
    goal = batched.goal.numpy()
    key = None if batched.key is None else batched.key.numpy()
    n_cells = GRID_SIZE * GRID_SIZE
    coords = np.stack(np.meshgrid(np.arange(GRID_SIZE), np.arange(GRID_SIZE), indexing="ij"), -1).reshape(-1, 2)
    moved = np.clip(coords[:, None, :] + MOVES[None], 0, GRID_SIZE - 1)  # [cell, action, 2]
    next_cell = moved[..., 0] * GRID_SIZE + moved[..., 1]  # [cell, action]
    flat = lambda xy: xy[:, 0] * GRID_SIZE + xy[:, 1]
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
    """The facts a protocol pins, recomputed from the env family (to write or check the pins).

    The current protocol supplies only its choices (which test tasks, how they are hashed).
    """
    from icrl_bench.envs import get_family

    protocol = current(env)
    params = protocol.test_task_params()
    facts = {
        "n_test_tasks": len(params),
        "test_tasks_sha256": protocol.tasks_sha256(params),
        "horizon": get_family(env).horizon,
    }
    if protocol.random_return is not None:
        random_return, oracle_return = reference_returns(env)
        facts["random_return"] = round(float(random_return.mean()), 12)
        facts["oracle_return"] = round(float(oracle_return.mean()), 12)
        facts["random_returns"] = tuple(round(float(v), 12) for v in random_return)
        facts["oracle_returns"] = tuple(round(float(v), 12) for v in oracle_return)
    return facts


def differing_pins(env: str) -> list[str]:
    """The pinned facts of `env`'s current protocol that its env family no longer gives."""
    protocol = current(env)
    return [
        f"{key}: pinned {getattr(protocol, key)!r}, recomputed {value!r}"
        for key, value in pinned_facts(env).items()
        if not _same_pin(getattr(protocol, key), value)
    ]


def _same_pin(pinned: object, value: object) -> bool:
    """Pins are exact, except the float reference returns (equal to 1e-9, per task too)."""
    if isinstance(value, tuple) and isinstance(pinned, tuple):
        return len(pinned) == len(value) and all(_same_pin(float(p), float(v)) for p, v in zip(pinned, value))
    return pinned == value or (isinstance(value, float) and isinstance(pinned, float) and abs(pinned - value) <= 1e-9)


REFERENCES_MODULE = Path(__file__).with_name("protocol_references.py")


def references_source() -> str:
    """The source of `icrl_bench.bench.protocol_references`, recomputed from the env families."""
    lines = [
        '"""Per-task reference returns of the grid-world protocols (pinned; do not edit by hand).',
        "",
        "Written by `python -m icrl_bench.bench.protocols --write-references`: per test task, in each protocol's",
        "order, `random` is the exact expected episode return of uniform random actions (dynamic",
        "programming over the grid, `protocols.reference_returns`) and `oracle` the optimal policy's",
        "return (`family.max_return`, what the `oracle` agent earns every episode). tests/test_harness.py",
        "recomputes them and checks them against the committed random and oracle leaderboard entries.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    tables: dict[str, dict[str, tuple[float, ...]]] = {"RANDOM_RETURNS": {}, "ORACLE_RETURNS": {}}
    for protocol in PROTOCOLS.values():
        if protocol.random_return is None:
            continue
        facts = pinned_facts(protocol.env)
        tables["RANDOM_RETURNS"][protocol.name] = facts["random_returns"]
        tables["ORACLE_RETURNS"][protocol.name] = facts["oracle_returns"]
    for table, values in tables.items():
        lines.append(f"{table}: dict[str, tuple[float, ...]] = {{")
        for name, row in values.items():
            lines.append(f"    \"{name}\": (")
            for start in range(0, len(row), 6):
                lines.append("        " + " ".join(f"{v!r}," for v in row[start : start + 6]))
            lines.append("    ),")
        lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    import sys

    if "--write-references" in sys.argv[1:]:
        from icrl_bench.fileio import write_text_atomic

        write_text_atomic(REFERENCES_MODULE, references_source())
        print(f"wrote {REFERENCES_MODULE}")
    else:
        for _env in dict.fromkeys(p.env for p in PROTOCOLS.values()):
            print(_env, "; ".join(differing_pins(_env)) or "ok")

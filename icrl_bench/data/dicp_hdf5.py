"""Import the official DICP code's HDF5 learning histories into an icrl-bench dataset.

The official `collect_data.py` writes one group per task ("0", "1", ...; the task order of
its unshuffled task list, which is our canonical order) with arrays shaped [step, stream]:
`states`, `next_states` (T, S, 2), `actions`, `rewards` (T, S), `dones` (T, S) and, after
its annotation pass, `optimal_actions` (S, T) (note the other order).

At an episode's last step its `next_states` holds SB3's auto-reset cell, not the terminal
cell. Our datasets record the true terminal cell, so the importer recomputes every next
cell from (state, action) with the env's dynamics, which is exact for the grid worlds,
and checks that it agrees with the file wherever the file is right (all other steps):
a file collected on another env fails that check instead of importing wrong data.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icrl_bench.data import store
from icrl_bench.data.build import BuildResult, complete_history, datasets_dir, finalize, staging_dir
from icrl_bench.data.recipes import check_dataset_id
from icrl_bench.data.schema import grid_world_arrays
from icrl_bench.envs import get_family
from icrl_bench.errors import IcrlBenchError
from icrl_bench.fileio import file_sha256
from icrl_bench.paths import data_root, ensure_writable

REQUIRED = ("states", "actions", "rewards", "next_states", "dones")


def import_dicp_hdf5(
    path: str | os.PathLike, env: str, dataset_id: str | None = None, root: str | os.PathLike | None = None
) -> BuildResult:
    """Convert an official DICP HDF5 file collected on grid world `env` into a dataset."""
    import h5py

    path = Path(path)
    family = get_family(env)
    dataset_id = check_dataset_id(dataset_id or f"{env}-dicp-import-v1")
    root_dir = ensure_writable(data_root(root), "datasets", "staging")
    final = datasets_dir(root_dir) / dataset_id
    if final.exists():
        raise IcrlBenchError(f"dataset {dataset_id} already exists at {final}; pass another --id or delete it first.")
    if not path.is_file():
        raise IcrlBenchError(f"no file at {path}; give the path of an HDF5 file written by the official collect_data.py.")
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise IcrlBenchError(f"{path} is not an HDF5 file; give a file written by the official collect_data.py.") from None
    staging = staging_dir(root_dir, dataset_id)
    with handle:
        n_tasks, n_steps, n_streams = _check_layout(handle, path, family.n_tasks)
        if staging.exists():
            shutil.rmtree(staging)
        staging.parent.mkdir(parents=True, exist_ok=True)
        try:
            group = store.create(staging, grid_world_arrays(len(family.param_names)), n_tasks, n_streams, n_steps)
            params = family.task_params()[:n_tasks]
            group["task_index"][:] = np.arange(n_tasks, dtype=np.int32)
            group["task_params"][:] = params.astype(np.uint8)
            group["split"][:] = family.split().labels(family.n_tasks)[:n_tasks]
            label_mismatches = 0
            for task in range(n_tasks):
                history = complete_history(env, params[task], _convert_task(handle[str(task)], family, params[task], path, task))
                if "optimal_actions" in handle[str(task)]:
                    # Keep the file's own DPT labels; count where our oracle would differ.
                    labels = handle[str(task)]["optimal_actions"][()].astype(np.uint8)
                    label_mismatches += int((labels != history["optimal_action"]).sum())
                    history["optimal_action"] = labels
                for name, values in history.items():
                    group[name][task] = values
            manifest = {
                "dataset_id": dataset_id,
                "family": env,
                "env": env,
                "version": 1,
                "preset": None,
                "description": f"Imported from the official DICP HDF5 file {path.name} ({n_tasks} tasks).",
                "recipe": None,
                "source": {"name": "dicp-official", "hyperparameters": {}},
                "seeds": {"base": None, "rule": "as recorded by the official collect_data.py (alg_seed + task index)"},
                "imported_from": {
                    "format": "dicp-hdf5",
                    "file": path.name,
                    "sha256": file_sha256(path),
                    "next_obs_fix": "episode-end next_states (SB3's reset cell) replaced by the terminal cell recomputed from state and action",
                    "optimal_action": "from the file" if "optimal_actions" in handle["0"] else "computed by icrl-bench's oracle",
                    "optimal_action_disagreements": label_mismatches,
                },
                "build": {"wall_time_s": None, "workers": 1, "device": "cpu"},
            }
            content_hash = finalize(staging, final, manifest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return BuildResult(dataset_id, final, content_hash, False, n_tasks, 0.0)


def _check_layout(handle: Any, path: Path, n_env_tasks: int) -> tuple[int, int, int]:
    """(n_tasks, n_steps, n_streams) of a well-formed file, or a one-line error."""
    names = set(handle.keys())
    n_tasks = len(names)
    if n_tasks == 0 or names != {str(i) for i in range(n_tasks)}:
        raise IcrlBenchError(f"{path}: expected task groups '0'..'N-1' (the official layout), found {sorted(names)[:5]}.")
    if n_tasks > n_env_tasks:
        raise IcrlBenchError(f"{path} has {n_tasks} task groups but the env has only {n_env_tasks} tasks; check --env.")
    shape = None
    for task in map(str, range(n_tasks)):
        group = handle[task]
        missing = [k for k in REQUIRED if k not in group]
        if missing:
            raise IcrlBenchError(f"{path}: group {task} lacks {', '.join(missing)} (the official layout has {', '.join(REQUIRED)}).")
        not_arrays = [k for k in REQUIRED + ("optimal_actions",) if k in group and not hasattr(group[k], "shape")]
        if not_arrays:
            raise IcrlBenchError(f"{path}: group {task}'s {', '.join(not_arrays)} must be arrays (HDF5 datasets), not groups.")
        steps_streams = group["actions"].shape
        if len(steps_streams) != 2 or 0 in steps_streams:
            raise IcrlBenchError(f"{path}: group {task}'s actions have shape {steps_streams}; the official layout is [step, stream], both > 0.")
        expected = {
            "states": steps_streams + (2,),
            "next_states": steps_streams + (2,),
            "rewards": steps_streams,
            "dones": steps_streams,
        }
        for key, want in expected.items():
            if group[key].shape != want:
                raise IcrlBenchError(f"{path}: group {task} array {key} has shape {group[key].shape}, expected {want}.")
        if "optimal_actions" in group and group["optimal_actions"].shape != steps_streams[::-1]:
            raise IcrlBenchError(f"{path}: group {task} optimal_actions has shape {group['optimal_actions'].shape}, expected {steps_streams[::-1]}.")
        if shape is not None and steps_streams != shape:
            raise IcrlBenchError(f"{path}: group {task} has [step, stream] shape {steps_streams}, group 0 has {shape}.")
        shape = steps_streams
    return n_tasks, shape[0], shape[1]


def _convert_task(group: Any, family, params: np.ndarray, path: Path, task: int) -> dict[str, np.ndarray]:
    """One task's arrays as [stream, step, ...] with true terminal next cells."""
    obs = np.swapaxes(group["states"][()], 0, 1)  # [T, S, 2] -> [S, T, 2]
    action = np.swapaxes(group["actions"][()], 0, 1)
    reward = np.swapaxes(group["rewards"][()], 0, 1)
    done = np.swapaxes(group["dones"][()], 0, 1).astype(bool)
    file_next = np.swapaxes(group["next_states"][()], 0, 1)
    if action.min() < 0 or action.max() > 4 or obs.min() < 0 or obs.max() > 8:
        raise IcrlBenchError(f"{path}: group {task} holds actions or cells outside the 9x9 grid world's range.")
    next_obs = _replay(family, params, obs, action, reward, done, file_next, path, task)
    return {"obs": obs, "action": action, "reward": reward, "next_obs": next_obs, "done": done}


def _replay(family, params: np.ndarray, obs, action, reward, done, file_next, path: Path, task: int) -> np.ndarray:
    """Run every stream's actions through the env from each episode's start and compare each step
    (state, reward, end of episode, and the file's next state where the episode goes on); returns the
    true next cells [S, T, 2]. Dark Key-to-Door's key possession is tracked along each episode by the env.

    The one thing no replay can check: an episode's last action when it changes neither the reward
    nor anything recorded (the file's next state there is SB3's reset cell, not where the action led).
    """
    n_streams, n_steps = action.shape
    env = family.batched(np.repeat(params[None], n_streams, axis=0))
    state = env.reset().numpy()
    true_next = np.empty_like(obs)
    for t in range(n_steps):
        step = env.step(torch.as_tensor(action[:, t], dtype=torch.long))
        true_next[:, t] = step.next_obs.numpy()
        checks = {
            "state": (obs[:, t] != state).any(-1),
            "reward": reward[:, t] != step.reward.numpy(),
            "episode end": done[:, t] != step.done.numpy(),
            "next state": ~done[:, t] & (file_next[:, t] != true_next[:, t]).any(-1),
        }
        for what, wrong in checks.items():
            if wrong.any():
                stream = int(np.flatnonzero(wrong)[0])
                raise IcrlBenchError(
                    f"{path}: group {task}, stream {stream}, step {t}: the {what} disagrees with {family.name}'s dynamics "
                    "(replayed from the episode's start); was the file collected on another env, or edited?"
                )
        state = step.obs.numpy()
    return true_next

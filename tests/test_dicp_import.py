"""Importing HDF5 files in the official DICP layout (written here by the test)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from icrl_bench.data.dataset import load_dataset
from icrl_bench.data.dicp_hdf5 import import_dicp_hdf5
from icrl_bench.envs import get_family
from icrl_bench.errors import IcrlBenchError


def write_official_file(path: Path, env: str, n_tasks: int = 3, n_streams: int = 4, n_steps: int = 100, seed: int = 0, optimal: bool = False) -> dict:
    """Random-policy histories written as the official collector does: [step, stream] arrays,
    int32, and SB3's reset cell as next_state at every episode's end."""
    family = get_family(env)
    rng = np.random.default_rng(seed)
    truth = {}
    with h5py.File(path, "w") as f:
        for task in range(n_tasks):
            batched = family.batched(np.repeat(family.task_params()[task : task + 1], n_streams, axis=0))
            obs = batched.reset().numpy()
            rows = {k: [] for k in ("states", "actions", "rewards", "next_states", "dones", "terminal")}
            for _ in range(n_steps):
                action = rng.integers(0, 5, n_streams)
                step = batched.step(__import__("torch").as_tensor(action))
                rows["states"].append(obs)
                rows["actions"].append(action)
                rows["rewards"].append(step.reward.numpy())
                rows["next_states"].append(step.obs.numpy())  # the reset cell where done, like SB3's new_obs
                rows["dones"].append(step.done.numpy())
                rows["terminal"].append(step.next_obs.numpy())
                obs = step.obs.numpy()
            group = f.create_group(str(task))
            for key in ("states", "actions", "rewards", "next_states"):
                group.create_dataset(key, data=np.stack(rows[key]).astype(np.int32))
            group.create_dataset("dones", data=np.stack(rows["dones"]))
            if optimal:
                group.create_dataset("optimal_actions", data=np.full((n_streams, n_steps), 4, dtype=np.int32))
            truth[task] = {k: np.swapaxes(np.stack(v), 0, 1) for k, v in rows.items()}
    return truth


@pytest.mark.parametrize("env", ["darkroom", "darkroom-permuted", "dark-key-to-door"])
def test_import_converts_layout_and_restores_terminal_cells(tmp_path, env):
    truth = write_official_file(tmp_path / "history.hdf5", env)
    result = import_dicp_hdf5(tmp_path / "history.hdf5", env, root=tmp_path)
    ds = load_dataset(result.dataset_id, root=tmp_path)
    assert result.dataset_id == f"{env}-dicp-import-v1"
    assert (ds.n_tasks, ds.n_streams, ds.n_steps) == (3, 4, 100)
    for task in range(3):
        np.testing.assert_array_equal(ds["obs"][task], truth[task]["states"])
        np.testing.assert_array_equal(ds["action"][task], truth[task]["actions"])
        np.testing.assert_array_equal(ds["next_obs"][task], truth[task]["terminal"])  # not the reset cell
        np.testing.assert_array_equal(ds["done"][task], truth[task]["dones"])
    np.testing.assert_array_equal(ds.task_params, get_family(env).task_params()[:3])
    assert ds.manifest["imported_from"]["optimal_action"] == "computed by icrl-bench's oracle"
    assert ds.verify() == result.content_hash


def test_import_keeps_the_files_own_dpt_labels(tmp_path):
    write_official_file(tmp_path / "h.hdf5", "darkroom", optimal=True)
    result = import_dicp_hdf5(tmp_path / "h.hdf5", "darkroom", root=tmp_path)
    ds = load_dataset(result.dataset_id, root=tmp_path)
    assert (ds["optimal_action"][:] == 4).all()
    assert ds.manifest["imported_from"]["optimal_action_disagreements"] > 0


def _rewrite(path: Path, edit) -> None:
    with h5py.File(path, "a") as f:
        edit(f)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: f.move("2", "7"), "expected task groups '0'..'N-1'"),
        (lambda f: f["1"].__delitem__("rewards"), "group 1 lacks rewards"),
        (lambda f: (f["0"].__delitem__("dones"), f["0"].create_dataset("dones", data=np.zeros((5, 4), bool))), "dones has shape"),
        (lambda f: f["0"]["actions"].__setitem__((0, 0), 9), "outside the 9x9 grid world's range"),
        (lambda f: (f["0"].__delitem__("actions"), f["0"].create_group("actions")), "actions must be arrays"),
        (lambda f: [(f[t].__delitem__(k), f[t].create_dataset(k, data=np.zeros((0, 4, 2) if "states" in k else (0, 4), np.int32)))
                    for t in f for k in ("states", "next_states", "actions", "rewards", "dones")], "both > 0"),
    ],
)
def test_wrong_layouts_are_one_line_errors_and_publish_nothing(tmp_path, edit, message):
    write_official_file(tmp_path / "h.hdf5", "darkroom")
    _rewrite(tmp_path / "h.hdf5", edit)
    with pytest.raises(IcrlBenchError, match=message):
        import_dicp_hdf5(tmp_path / "h.hdf5", "darkroom", root=tmp_path)
    assert not (tmp_path / "datasets" / "darkroom-dicp-import-v1").exists()
    assert not list((tmp_path / "staging").glob("*")) if (tmp_path / "staging").exists() else True


def test_a_file_from_another_env_is_refused(tmp_path):
    write_official_file(tmp_path / "h.hdf5", "darkroom-permuted", n_tasks=3)
    with pytest.raises(IcrlBenchError, match="disagrees with darkroom's dynamics"):
        import_dicp_hdf5(tmp_path / "h.hdf5", "darkroom", root=tmp_path)


def _edit(path: Path, task: str, key: str, change) -> None:
    with h5py.File(path, "r+") as f:
        values = f[task][key][()]
        change(values)
        f[task][key][...] = values


def test_every_transition_is_replayed_against_the_dynamics(tmp_path):
    """Once only next states were checked: a flipped reward or a Darkroom file imported as
    Dark Key-to-Door (movement is identical) went through."""
    truth = write_official_file(tmp_path / "ok.hdf5", "darkroom", n_tasks=2, n_streams=3, n_steps=60)
    import shutil

    flipped = tmp_path / "flipped.hdf5"
    shutil.copy(tmp_path / "ok.hdf5", flipped)
    rewards = truth[1]["rewards"]
    stream, step = map(int, np.argwhere(rewards == 0)[5])  # a step away from the goal
    _edit(flipped, "1", "rewards", lambda r: r.__setitem__((step, stream), 1))
    with pytest.raises(IcrlBenchError, match=f"group 1, stream {stream}, step {step}: the reward disagrees"):
        import_dicp_hdf5(flipped, "darkroom", root=tmp_path / "a")
    with pytest.raises(IcrlBenchError, match="disagrees with dark-key-to-door's dynamics"):
        import_dicp_hdf5(tmp_path / "ok.hdf5", "dark-key-to-door", root=tmp_path / "b")
    moved = tmp_path / "moved.hdf5"
    shutil.copy(tmp_path / "ok.hdf5", moved)
    _edit(moved, "0", "states", lambda s: s.__setitem__((7, 2), (s[7, 2] + 1) % 9))  # a state that no action reached
    with pytest.raises(IcrlBenchError, match="group 0, stream 2, step 7: the state disagrees"):
        import_dicp_hdf5(moved, "darkroom", root=tmp_path / "c")
    assert not (tmp_path / "a" / "datasets").exists() or not any((tmp_path / "a" / "datasets").iterdir())
    import_dicp_hdf5(tmp_path / "ok.hdf5", "darkroom", root=tmp_path / "d")  # the untouched file imports


def test_not_hdf5_missing_file_and_existing_id(tmp_path):
    (tmp_path / "x.hdf5").write_text("hello")
    with pytest.raises(IcrlBenchError, match="is not an HDF5 file"):
        import_dicp_hdf5(tmp_path / "x.hdf5", "darkroom", root=tmp_path)
    with pytest.raises(IcrlBenchError, match="no file at"):
        import_dicp_hdf5(tmp_path / "missing.hdf5", "darkroom", root=tmp_path)
    write_official_file(tmp_path / "h.hdf5", "darkroom", n_tasks=1)
    import_dicp_hdf5(tmp_path / "h.hdf5", "darkroom", dataset_id="mine-v1", root=tmp_path)
    with pytest.raises(IcrlBenchError, match="already exists"):
        import_dicp_hdf5(tmp_path / "h.hdf5", "darkroom", dataset_id="mine-v1", root=tmp_path)

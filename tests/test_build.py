"""Building datasets: content, determinism, resume after a kill, atomic publishing, bad input."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from icrl_bench.data.build import build_dataset, staging_dir, state_path
from icrl_bench.data.dataset import load_dataset
from icrl_bench.data.recipes import resolve
from icrl_bench.envs import DarkKeyToDoorEnv, get_family
from icrl_bench.errors import IcrlBenchError


def test_tiny_dataset_layout_and_manifest(tiny_dataset):
    ds = tiny_dataset
    m = ds.manifest
    assert m["dataset_id"] == "darkroom-tiny-v3" and m["format"] == "icrl-bench-dataset"
    assert (ds.n_tasks, ds.n_streams, ds.n_steps) == (9, 4, 200)
    assert ds["obs"].shape == (9, 4, 200, 2) and ds["obs"].dtype == np.uint8
    assert {ds[n].dtype for n in ("action", "reward", "optimal_action")} == {np.dtype(np.uint8)}
    assert ds["done"].dtype == np.bool_
    assert m["source"]["name"] == "batched-ppo" and m["source"]["hyperparameters"]["n_epochs"] == 2
    assert set(m["arrays"]) == set(ds.array_names) and len(m["content_hash"]) == 64
    assert m["provenance"]["packages"]["zarr"].startswith("3.")
    family = get_family("darkroom")
    np.testing.assert_array_equal(ds.task_index, np.arange(0, 81, 9))
    np.testing.assert_array_equal(ds.task_params, family.task_params()[ds.task_index])
    np.testing.assert_array_equal(ds.split, family.split().labels(81)[ds.task_index])
    assert m["split"]["test"] == family.split().test.tolist()


def test_histories_record_true_terminal_cells_and_consistent_transitions(tiny_dataset):
    ds = tiny_dataset
    family = get_family("darkroom")
    for row in (0, 4):
        obs, next_obs = ds["obs"][row].astype(int), ds["next_obs"][row].astype(int)
        done, action, reward = ds["done"][row], ds["action"][row], ds["reward"][row]
        assert done[:, 19::20].all() and done.sum() == 4 * 10  # horizon 20, 10 episodes per stream
        # next_obs is the cell reached, also at an episode's end (not the reset cell)...
        env = family.make_env(int(ds.task_index[row])).unwrapped
        for s, t in [(0, 19), (1, 39), (3, 199), (2, 7)]:
            env._state, env._t = obs[s, t].astype(np.int32), 0
            cell, r, *_ = env.step(int(action[s, t]))
            np.testing.assert_array_equal(next_obs[s, t], cell)
            assert reward[s, t] == r
        # ...and the next step starts from next_obs within an episode, from the centre after one.
        np.testing.assert_array_equal(obs[:, 1:][~done[:, :-1]], next_obs[:, :-1][~done[:, :-1]])
        assert (obs[:, 1:][done[:, :-1]] == 4).all()


def test_optimal_action_labels_match_the_single_env_oracle(tiny_dataset):
    ds = tiny_dataset
    family = get_family("darkroom")
    env = family.make_env(int(ds.task_index[3])).unwrapped
    obs, labels = ds["obs"][3], ds["optimal_action"][3]
    for s, t in [(0, 0), (1, 50), (3, 199)]:
        assert labels[s, t] == env.optimal_action(obs[s, t])


def test_key_to_door_labels_follow_key_possession():
    """DPT's label heads to the key until a reward in the episode, then to the door."""
    family = get_family("dark-key-to-door")
    params = np.array([4, 6, 4, 2])  # key two cells up, door two cells down
    obs = np.array([[[4, 4], [4, 5], [4, 6], [4, 5], [4, 4], [4, 4]]])
    reward = np.array([[0, 1, 0, 0, 0, 0]])  # stepping from (4, 5) onto the key
    done = np.array([[0, 0, 0, 0, 1, 0]], dtype=bool)  # a new episode starts at step 5
    labels = family.optimal_actions(params[None], obs[None], reward[None], done[None])[0, 0]
    env = DarkKeyToDoorEnv(key=(4, 6), goal=(4, 2))
    expected = [env.optimal_action(o, h) for o, h in zip(obs[0], [False, False, True, True, True, False])]
    assert labels.tolist() == expected == [2, 2, 3, 3, 3, 2]


@pytest.fixture(scope="module")
def sb3_tiny(tmp_path_factory) -> str:
    """Content hash of an uninterrupted one-worker build of the tiny preset with SB3 (one task per job)."""
    root = tmp_path_factory.mktemp("sb3-tiny")
    return build_dataset("darkroom", "tiny", source="sb3-ppo", root=root, workers=1, show_progress=False).content_hash


def test_same_recipe_and_seed_give_the_same_hash_with_any_worker_count(sb3_tiny, tmp_path):
    again = build_dataset("darkroom", "tiny", source="sb3-ppo", root=tmp_path, workers=2, show_progress=False)
    assert again.dataset_id == "darkroom-tiny-sb3-ppo-v3"
    assert again.content_hash == sb3_tiny and not again.already_built
    rerun = build_dataset("darkroom", "tiny", source="sb3-ppo", root=tmp_path, workers=2, show_progress=False)
    assert rerun.already_built and rerun.content_hash == again.content_hash


def test_the_default_source_rebuilds_the_same_hash(tiny_dataset, tmp_path):
    again = build_dataset("darkroom", "tiny", root=tmp_path, workers=2, show_progress=False)
    assert again.content_hash == tiny_dataset.manifest["content_hash"]


@pytest.mark.skipif(platform.machine().lower() not in {"x86_64", "amd64"}, reason="ATen's AVX2 kernels are x86-64's")
def test_the_build_command_runs_its_jobs_on_atens_avx2_kernels(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}  # the CPU's best kernels, unless the command pins them
    for workers in ("1", "2"):  # in the command's process, and in spawned workers
        root = tmp_path / workers
        args = [sys.executable, "-m", "icrl_bench", "build-dataset", "darkroom", "--preset", "tiny", "--workers", workers, "--quiet",
                "--root", str(root)]
        subprocess.run(args, check=True, capture_output=True, env=env, timeout=300)
        kernels = load_dataset("darkroom-tiny-v3", root).manifest["build"]["torch_cpu_capability"]
        assert kernels in {"AVX2", "DEFAULT"}, kernels  # DEFAULT: a CPU without AVX2


@pytest.mark.parametrize("machine, users, expected", [
    ("x86_64", None, {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("AMD64", None, {"ATEN_CPU_CAPABILITY": "avx2"}),
    ("x86_64", "default", {"ATEN_CPU_CAPABILITY": "default"}),  # a user's own setting wins
    ("aarch64", None, {}),
])
def test_build_jobs_pin_atens_cpu_kernels(monkeypatch, machine, users, expected):
    from icrl_bench.data import build

    monkeypatch.setattr(build.platform, "machine", lambda: machine)
    if users is None:
        monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    else:
        monkeypatch.setenv("ATEN_CPU_CAPABILITY", users)
    assert build.job_environment() == expected
    build.pin_cpu_kernels()
    assert os.environ.get("ATEN_CPU_CAPABILITY") == expected.get("ATEN_CPU_CAPABILITY")


def test_another_seed_is_another_dataset(tmp_path):
    assert resolve("darkroom", "tiny", seed=7).dataset_id == "darkroom-tiny-seed7-v3"
    assert resolve("darkroom", "tiny", seed=0).dataset_id == "darkroom-tiny-v3"


SB3_TINY = "darkroom-tiny-sb3-ppo-v3"


def _build_until_tasks_saved(root: Path, n_saved: int) -> None:
    """Start a CLI build (SB3: one task per job) and SIGKILL it once `n_saved` tasks are recorded."""
    command = [
        sys.executable, "-m", "icrl_bench.cli", "build-dataset", "darkroom", "--preset", "tiny", "--source", "sb3-ppo",
        "--workers", "1", "--quiet", "--root", str(root),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = state_path(staging_dir(root, SB3_TINY))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if state.is_file():
            try:
                if len(json.loads(state.read_text())["done"]) >= n_saved:
                    break
            except (json.JSONDecodeError, KeyError):
                pass
        time.sleep(0.02)
    assert process.poll() is None, f"the build ended before it could be killed: {process.stderr.read().decode()}"
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_resume_after_kills_gives_the_uninterrupted_hash(sb3_tiny, tmp_path):
    _build_until_tasks_saved(tmp_path, 2)
    assert not (tmp_path / "datasets" / SB3_TINY).exists(), "a killed build must not be published"
    _build_until_tasks_saved(tmp_path, 5)  # interrupted twice
    saved = json.loads(state_path(staging_dir(tmp_path, SB3_TINY)).read_text())["done"]
    assert len(saved) >= 5
    result = build_dataset("darkroom", "tiny", source="sb3-ppo", root=tmp_path, workers=1, show_progress=False)
    assert result.tasks_run == 9 - len(saved)
    assert result.content_hash == sb3_tiny
    assert load_dataset(SB3_TINY, root=tmp_path).verify() == result.content_hash
    assert not staging_dir(tmp_path, SB3_TINY).exists()
    assert not state_path(staging_dir(tmp_path, SB3_TINY)).exists()


def test_unknown_env_preset_and_source_suggest_fixes(tmp_path):
    with pytest.raises(IcrlBenchError, match="unknown dataset recipe 'darkrom'.*Did you mean 'darkroom'"):
        build_dataset("darkrom", root=tmp_path)
    with pytest.raises(IcrlBenchError, match="unknown preset of darkroom 'smal'.*Did you mean 'small'"):
        build_dataset("darkroom", "smal", root=tmp_path)
    with pytest.raises(IcrlBenchError, match="unknown source 'ppo'"):
        build_dataset("darkroom", "tiny", source="ppo", root=tmp_path)
    with pytest.raises(IcrlBenchError, match="--workers must be at least 1"):
        build_dataset("darkroom", "tiny", workers=0, root=tmp_path)


def test_unwritable_root_is_one_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(IcrlBenchError, match="is not writable.*--root"):
        build_dataset("darkroom", "tiny", root=blocker / "root")


def test_foreign_directory_at_the_dataset_path_is_refused(tmp_path):
    foreign = tmp_path / "datasets" / "darkroom-tiny-v3"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(IcrlBenchError, match="not an icrl-bench dataset"):
        build_dataset("darkroom", "tiny", root=tmp_path)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_running_build_locks_out_a_second(tmp_path):
    import fcntl

    lock = staging_dir(tmp_path, "darkroom-tiny-v3").with_suffix(".lock")
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(IcrlBenchError, match="another build of darkroom-tiny-v3 is running"):
            build_dataset("darkroom", "tiny", root=tmp_path)


def test_bad_recipe_values_are_one_line_errors(tmp_path, monkeypatch):
    from icrl_bench import paths
    from icrl_bench.data import recipes

    monkeypatch.setattr(recipes, "RECIPE_DIR", tmp_path)
    base = (paths.RECIPE_DIR / "darkroom.yaml").read_text()
    (tmp_path / "darkroom.yaml").write_text(base.replace("total_timesteps: 100000", "total_timesteps: 12345"))
    with pytest.raises(IcrlBenchError, match="total_timesteps .* must be a multiple"):
        recipes.resolve("darkroom")
    (tmp_path / "darkroom.yaml").write_text(base.replace("n_epochs: 20", "n_epochs: 20\n  n_epoch: 3"))
    with pytest.raises(IcrlBenchError, match="unknown setting.*n_epoch"):
        recipes.resolve("darkroom")
    (tmp_path / "darkroom.yaml").write_text(base.replace("version: 3", "version: zero"))
    with pytest.raises(IcrlBenchError, match="is invalid"):
        recipes.resolve("darkroom")


def test_every_shipped_recipe_and_preset_resolves_and_round_trips_its_id():
    from icrl_bench.data.recipes import known_families, load_recipe, parse_dataset_id, resolve

    assert known_families() == ["dark-key-to-door", "darkroom", "darkroom-permuted", "metaworld-ml1", "metaworld-ml10"]
    for family in known_families():
        recipe = load_recipe(family)
        for preset in [None, *recipe.presets]:
            for source in [recipe.source["name"], *recipe.other_sources]:
                plan = resolve(family, preset, source, task="reach" if recipe.task_names else None)
                assert parse_dataset_id(plan.dataset_id) == plan
            assert plan.source_settings["total_timesteps"] // plan.source_settings["n_streams"] >= 200
    assert resolve("darkroom").source_settings | {} == resolve("darkroom").source_settings
    paper = resolve("darkroom").source_settings
    assert (paper["n_streams"], paper["total_timesteps"], paper["n_steps"], paper["batch_size"], paper["n_epochs"]) == (100, 100_000, 20, 50, 20)


def test_a_device_that_is_not_there_is_a_one_line_error(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(IcrlBenchError, match="no CUDA GPU"):
        build_dataset("darkroom", "tiny", device="cuda", root=tmp_path)
    with pytest.raises(IcrlBenchError, match="unknown --device 'tpu'"):
        build_dataset("darkroom", "tiny", device="tpu", root=tmp_path)


def test_a_state_file_left_without_its_store_restarts_cleanly(tiny_dataset, tmp_path):
    """A kill between publishing and cleaning up leaves only the state file; a rebuild must still work."""
    staging = staging_dir(tmp_path, "darkroom-tiny-v3")
    staging.parent.mkdir(parents=True)
    plan = json.loads(json.dumps(resolve("darkroom", "tiny").to_dict()))
    state_path(staging).write_text(json.dumps({"plan": plan, "done": list(range(9)), "wall_time_s": 1.0}))
    result = build_dataset("darkroom", "tiny", root=tmp_path, workers=1, show_progress=False)
    assert result.tasks_run == 9 and result.content_hash == tiny_dataset.manifest["content_hash"]


def test_an_unfinished_build_with_other_settings_is_not_overwritten(tmp_path):
    staging = staging_dir(tmp_path, "darkroom-tiny-v3")
    staging.mkdir(parents=True)
    (staging / "zarr.json").write_text("{}")
    state_path(staging).write_text(json.dumps({"plan": {"other": 1}, "done": [0], "wall_time_s": 1.0}))
    with pytest.raises(IcrlBenchError, match="unfinished build of darkroom-tiny-v3 with other settings"):
        build_dataset("darkroom", "tiny", root=tmp_path, workers=1, show_progress=False)
    assert (staging / "zarr.json").read_text() == "{}"


def _children(pid: int) -> list[int]:
    """Live (non-zombie) processes whose parent is `pid`."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid) and not fields.get("State", "").startswith("Z"):
            found.append(int(status.parent.name))
    return found


def _alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if "State:\tZ" not in state:
            alive.append(pid)
    return alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_build_leaves_no_process_behind(signum, tmp_path):
    """Once, SIGKILL or SIGTERM of a build left its workers and manager running for good (~850 MB)."""
    args = [sys.executable, "-m", "icrl_bench", "build-dataset", "darkroom", "--preset", "small", "--workers", "2", "--quiet",
            "--root", str(tmp_path)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    children: list[int] = []
    while time.time() < deadline and len(children) < 2:
        time.sleep(0.2)
        children = _children(process.pid)
    assert len(children) >= 2, "the build never started its workers"
    time.sleep(2.0)  # the workers are training
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    if signum == signal.SIGTERM:
        assert "interrupted" in err and "run the same command again to resume" in err and "Traceback" not in err, err
    deadline = time.time() + 15
    while time.time() < deadline and _alive(children):
        time.sleep(0.2)
    assert _alive(children) == []


def test_sigterm_interrupts_a_build_in_the_main_process_too(tmp_path):
    """With --workers 1 the jobs run in the builder itself, where SIGTERM once killed it with no word (exit 143)."""
    args = [sys.executable, "-m", "icrl_bench", "build-dataset", "darkroom", "--preset", "small", "--workers", "1", "--quiet",
            "--root", str(tmp_path)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "staging" / "darkroom-small-v3.build-state.json"
    deadline = time.time() + 180
    while time.time() < deadline and not state.is_file():
        time.sleep(0.2)
    assert state.is_file(), "the build never started"
    time.sleep(2.0)  # PPO is training
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=300)  # the job in hand finishes first: minutes on a CPU busy with other work
    assert process.returncode == 130 and "interrupted" in err and "run the same command again to resume" in err, err

"""The trainer: runs, checkpoints, exact resume, configs, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from icrl_bench.agents.models import MODEL_SPECS
from icrl_bench.errors import IcrlBenchError
from icrl_bench.training import BASELINES_DIR, TrainConfig, load_run_config, train
from icrl_bench.training.loop import _sampler_config, lr_at

ENVS = ("darkroom", "darkroom-permuted", "dark-key-to-door")


def tiny_config(tmp_path: Path, agent: str = "dicp-ad", env: str = "darkroom", **train_changes) -> Path:
    """A run config with a very small network so that a run takes seconds."""
    model = {"n_transit": 20, "low_per_high": 10} if "idt" in agent else {"n_transit": 8}
    config = {
        "agent": agent,
        "env": env,
        "model": {**model, "transformer": {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_inner": 32, "dropout": 0.1, "attn_dropout": 0.1}},
        "train": {"lr": 3e-3, "batch_size": 16, "steps": 8, "log_interval": 2, "eval_interval": 4, "ckpt_interval": 2,
                  "val_max_tasks": 3, "val_windows_per_task": 2, **train_changes},
    }
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{agent}-{env}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(tmp_path: Path, tiny_root: Path, agent: str = "dicp-ad", **kwargs):
    if "config_path" not in kwargs:
        kwargs["config_path"] = tiny_config(tmp_path, agent)
    return train(agent, "darkroom-tiny-v3", device="cpu", out=tmp_path / "runs", root=tiny_root, show_progress=False, **kwargs)


@pytest.mark.parametrize("agent", sorted(MODEL_SPECS))
def test_every_baseline_config_loads(agent: str) -> None:
    for env in ENVS:
        for preset in (None, "cpu"):
            config = load_run_config(agent, env, preset)
            assert config.model.dynamics == agent.startswith("dicp-")
            assert config.train.betas == (0.9, 0.99) and config.train.weight_decay == 0.01 and config.train.grad_clip == 1.0
        assert load_run_config(agent, env).model.n_transit == (80 if env == "darkroom" else 200)


def test_cosine_schedule() -> None:
    config = TrainConfig(lr=0.01, steps=100, warmup_steps=10)
    assert lr_at(0, config) == 0 and lr_at(10, config) == pytest.approx(0.01) and lr_at(100, config) == pytest.approx(0.0)
    assert lr_at(55, config) == pytest.approx(0.005)


def test_window_start_every_reaches_the_sampler() -> None:
    assert _sampler_config(TrainConfig(window_start_every=10), "darkroom", 80, seed=0).start_every == 10
    assert _sampler_config(TrainConfig(), "darkroom", 80, seed=0).start_every == 1  # the papers': anywhere
    with pytest.raises(ValueError, match="window_start_every must be > 0"):
        TrainConfig(window_start_every=0)


def test_a_run_writes_checkpoint_metrics_and_provenance(tmp_path: Path, tiny_root: Path) -> None:
    result = run(tmp_path, tiny_root)
    assert {p.name for p in result.run_dir.iterdir()} == {"run.json", "metrics.jsonl", "checkpoint"}
    files = {p.name for p in (result.run_dir / "checkpoint").iterdir()}
    assert files == {"model.safetensors", "checkpoint.json", "trainer_state.safetensors", "trainer_state.json"}
    meta = json.loads((result.run_dir / "checkpoint" / "checkpoint.json").read_text())
    assert meta["agent"] == "dicp-ad" and meta["step"] == 8 and meta["dataset"]["id"] == "darkroom-tiny-v3"
    assert len(meta["dataset"]["content_hash"]) == 64 and "code_commit" in meta["provenance"]
    assert meta["model_config"]["dynamics"] is True and meta["train_config"]["lr"] == 3e-3
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == [2, 4, 6, 8]
    assert {"samples_per_s", "acc_action", "acc_next_state", "lr"} <= set(lines[0])
    assert any("val_acc_action" in r for r in lines) and "val_acc_reward" in result.val_metrics


def test_idt_takes_horizon_and_target_return_from_the_dataset(tmp_path: Path, tiny_root: Path) -> None:
    result = run(tmp_path, tiny_root, "idt")
    meta = json.loads((result.run_dir / "checkpoint" / "checkpoint.json").read_text())
    assert meta["model_config"]["horizon"] == 20 and meta["model_config"]["target_return"] > 0
    from icrl_bench.agents.transformer_agent import from_checkpoint

    assert type(from_checkpoint("idt", result.run_dir)).__name__ == "IDTAgent"


@pytest.mark.parametrize("agent, overrides", [("dicp-ad", []), ("dicp-idt", []), ("ad", ["model.layout=dense"]), ("dicp-idt", ["model.layout=dense"])])
def test_resume_gives_the_weights_of_an_uninterrupted_run(agent: str, overrides: list[str], tmp_path: Path, tiny_root: Path) -> None:
    """Dropout and IDT's sampled decisions draw from the RNG: its state is restored too."""
    straight = run(tmp_path / "a", tiny_root, agent, overrides=overrides)
    first = run(tmp_path / "b", tiny_root, agent, stop_after=3, overrides=overrides)  # interrupted after 3 steps (checkpoint there)
    assert first.step == 3
    resumed = train(resume=first.run_dir, device="cpu", show_progress=False)
    assert resumed.step == 8 and resumed.run_dir == first.run_dir
    a = load_file(str(straight.run_dir / "checkpoint" / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "checkpoint" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = load_file(str(straight.run_dir / "checkpoint" / "trainer_state.safetensors"))
    sb = load_file(str(resumed.run_dir / "checkpoint" / "trainer_state.safetensors"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bad_inputs_are_one_line_errors(tmp_path: Path, tiny_root: Path) -> None:
    with pytest.raises(IcrlBenchError, match="unknown trainable agent 'dicp-add'.*Did you mean 'dicp-ad'.*Known: ad, dicp-ad, dicp-dpt, dicp-idt, dpt, idt"):
        train("dicp-add", "darkroom-tiny-v3", root=tiny_root, show_progress=False)
    with pytest.raises(IcrlBenchError, match="not under.*datasets download darkroom-small-v3.*build-dataset darkroom --preset small"):
        train("ad", "darkroom-small-v3", root=tiny_root, show_progress=False)
    with pytest.raises(IcrlBenchError, match="config for env 'dark-key-to-door' but the dataset is 'darkroom'"):
        run(tmp_path, tiny_root, "ad", config_path=tiny_config(tmp_path, "ad", "dark-key-to-door"))
    if not torch.cuda.is_available():
        with pytest.raises(IcrlBenchError, match="torch sees no CUDA GPU"):
            train("ad", "darkroom-tiny-v3", device="cuda", root=tiny_root, show_progress=False)
    with pytest.raises(IcrlBenchError, match="lr must be > 0"):
        run(tmp_path, tiny_root, config_path=tiny_config(tmp_path, lr=-1.0))
    with pytest.raises(IcrlBenchError, match="unknown train key.*batchsize"):
        run(tmp_path, tiny_root, config_path=tiny_config(tmp_path, batchsize=4))
    with pytest.raises(IcrlBenchError, match="no preset 'gpu'"):
        train("ad", "darkroom-tiny-v3", preset="gpu", root=tiny_root, show_progress=False)
    with pytest.raises(IcrlBenchError, match="not a training run directory"):
        train(resume=tmp_path, show_progress=False)


def test_cli_train(tmp_path: Path, tiny_root: Path) -> None:
    from icrl_bench.cli import app

    config = tiny_config(tmp_path, "dpt", steps=4)
    result = CliRunner().invoke(app, ["train", "--agent", "dpt", "--dataset", "darkroom-tiny-v3", "--config", str(config), "--device", "cpu",
                                      "--root", str(tiny_root), "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "trained to step 4" in result.output
    result = CliRunner().invoke(app, ["train", "--agent", "dpt", "--dataset", "nope-v1", "--root", str(tiny_root)])
    assert result.exit_code != 0


def test_baselines_directory_has_every_agent() -> None:
    for env in ENVS:
        assert {p.stem for p in (BASELINES_DIR / env).glob("*.yaml")} >= set(MODEL_SPECS)


def test_an_abrupt_interrupt_resumes_exactly_from_the_last_checkpoint(tmp_path: Path, tiny_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyboardInterrupt that is no signal the loop caught (a second Ctrl-C) may land mid-step: nothing is saved then."""
    from icrl_bench.data.sampler import WindowSampler

    straight = run(tmp_path / "a", tiny_root)
    original = WindowSampler.batch

    def interrupted(self, step):
        if step == 5:
            raise KeyboardInterrupt
        return original(self, step)

    monkeypatch.setattr(WindowSampler, "batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", tiny_root)
    run_dir = next((tmp_path / "b" / "runs").iterdir())
    assert json.loads((run_dir / "checkpoint" / "checkpoint.json").read_text())["step"] == 4  # the last regular one
    monkeypatch.setattr(WindowSampler, "batch", original)
    resumed = train(resume=run_dir, device="cpu", show_progress=False)
    a = load_file(str(straight.run_dir / "checkpoint" / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "checkpoint" / "model.safetensors"))
    assert resumed.step == 8 and all(torch.equal(a[k], b[k]) for k in a)


def test_set_overrides_apply_are_validated_and_recorded(tmp_path: Path, tiny_root: Path) -> None:
    result = run(tmp_path, tiny_root, "ad", overrides=["train.lr=0.001", "model.transformer.n_layer=2", "train.steps=4"])
    meta = json.loads((result.run_dir / "run.json").read_text())
    assert meta["config"]["train"]["lr"] == 0.001 and meta["config"]["model"]["transformer"]["n_layer"] == 2
    assert result.step == 4 and meta["overrides"] == ["train.lr=0.001", "model.transformer.n_layer=2", "train.steps=4"]
    with pytest.raises(IcrlBenchError, match="unknown train key.*lrate"):
        run(tmp_path, tiny_root, "ad", overrides=["train.lrate=1"])
    with pytest.raises(IcrlBenchError, match="--set takes model.KEY=VALUE or train.KEY=VALUE"):
        run(tmp_path, tiny_root, "ad", overrides=["lr=1"])
    with pytest.raises(IcrlBenchError, match="lr must be > 0"):
        run(tmp_path, tiny_root, "ad", overrides=["train.lr=0"])
    with pytest.raises(IcrlBenchError, match="lr must be a number, got 'fast'"):
        run(tmp_path, tiny_root, "ad", overrides=["train.lr=fast"])
    with pytest.raises(IcrlBenchError, match="batch_size must be a whole number, got 2.5"):
        run(tmp_path, tiny_root, "ad", overrides=["train.batch_size=2.5"])


def test_set_values_read_exponents_as_numbers_as_the_help_example_writes_them() -> None:
    from icrl_bench.training import parse_overrides

    parsed = parse_overrides(["train.lr=3e-3", "train.steps=12000", "model.layout=dense", "train.betas=[0.9, 0.95]", "train.note=nan"])
    assert parsed == {"train": {"lr": 0.003, "steps": 12000, "betas": [0.9, 0.95], "note": "nan"}, "model": {"layout": "dense"}}
    assert isinstance(parsed["train"]["steps"], int)


def test_time_budget_fits_the_total_steps_and_the_schedule_follows(tmp_path: Path, tiny_root: Path, monkeypatch) -> None:
    import icrl_bench.training.budget as budget_module

    monkeypatch.setattr(budget_module, "BUDGET_PROBE_STEPS", 4)
    monkeypatch.setattr(budget_module, "BUDGET_WARMUP_STEPS", 2)
    config = tiny_config(tmp_path, "ad", steps=100_000, log_interval=2, eval_interval=1_000, ckpt_interval=1_000)
    clock = iter(range(10**6))  # every perf_counter() call advances one "second"
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: float(next(clock)))
    result = run(tmp_path, tiny_root, "ad", config_path=config, time_budget_s=40)
    meta = json.loads((result.run_dir / "run.json").read_text())
    fitted = meta["time_budget"]["fitted_steps"]
    assert meta["time_budget"]["config_steps"] == 100_000 and meta["config"]["train"]["steps"] == fitted == result.step
    assert 4 <= fitted < 100 and fitted % 2 == 0
    assert budget_module.fit_steps(TrainConfig(steps=50_000, log_interval=100), 60, 0.1, 100.0) == 900  # 60 + 900 -> 960 -> 900
    assert budget_module.fit_steps(TrainConfig(steps=500, log_interval=100), 60, 0.1, 100.0) == 500  # never above the config
    assert budget_module.fit_steps(TrainConfig(steps=500, log_interval=100), 60, 0.1, -5.0) == 60  # out of time: stop here
    with pytest.raises(IcrlBenchError, match="--time-budget must be > 0"):
        run(tmp_path, tiny_root, "ad", time_budget_s=0)
    # a config's own budget (the laptop presets': 45 min) fits the run the same way when no --time-budget is given
    own = tiny_config(tmp_path / "own", "ad", steps=100_000, log_interval=2, eval_interval=1_000, ckpt_interval=1_000, time_budget_s=40)
    from_config = run(tmp_path, tiny_root, "ad", config_path=own)
    budget = json.loads((from_config.run_dir / "run.json").read_text())["time_budget"]
    assert budget["seconds"] == 40 and budget["config_steps"] == 100_000 and budget["fitted_steps"] == from_config.step < 100
    assert load_run_config("ad", "darkroom", "laptop").train.time_budget_s == 2700 and TrainConfig().time_budget_s == 0
    with pytest.raises(IcrlBenchError, match="time_budget_s must be >= 0"):
        run(tmp_path, tiny_root, "ad", overrides=["train.time_budget_s=-1"])


@pytest.mark.parametrize("agent, preset", [("idt", "laptop"), ("dicp-idt", "laptop-warm")])
def test_darkroom_idt_laptop_presets_are_the_shipped_checkpoints_recipes(agent: str, preset: str) -> None:
    """The shipped Darkroom IDT and DICP-IDT ran `laptop-try` plus overrides on two ranks; the presets that
    record their recipes must resolve (batch split over the two ranks) to the configs in their run.json, but
    for what training fills in (horizon, target_return from the dataset; steps from the time budget)."""
    shipped = json.loads((BASELINES_DIR / f"darkroom/{agent}/run.json").read_text())
    world = shipped["world_size"]
    config = load_run_config(agent, "darkroom", preset, overrides={"train": {"batch_size": 32 // world, "hold_out_validation_goals": True}})
    model, recorded = config.model.to_dict(), dict(shipped["config"]["model"])
    for filled in ("horizon", "target_return"):
        recorded.pop(filled), model.pop(filled)
    assert model == recorded and model["return_to_go_label"] == "train-max" and model["layout"] == "dense"
    train_cfg = json.loads(json.dumps(vars(config.train)))  # tuples as lists, as run.json holds them
    recorded_train = dict(shipped["config"]["train"])
    assert recorded_train.pop("steps") <= train_cfg.pop("steps")
    assert train_cfg == recorded_train


def test_time_budget_fits_again_at_the_warmup_end_from_the_speed_since_the_probe(monkeypatch) -> None:
    """A probe slowed by other work at start-up (2 s a step, then 0.5 s) no longer fixes the whole run."""
    import icrl_bench.training.budget as budget_module

    monkeypatch.setattr(budget_module, "BUDGET_WARMUP_STEPS", 2)
    monkeypatch.setattr(budget_module, "BUDGET_PROBE_STEPS", 10)
    now = [0.0]
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: now[0])
    fits = []
    watch = budget_module.TimeBudget(100.0, 0, 0.0, lambda fitted, step: fits.append((fitted, step)))
    tc = TrainConfig(steps=100_000, log_interval=1, warmup_steps=40)
    returned = {}
    for step in range(1, 60):
        now[0] += 2.0 if step <= 12 else 0.5
        out = watch.after_step(step, tc)
        if out is not None:
            returned[step] = out
    # probe, steps 2..12 at 2 s: 76 s left -> 12 + int(76 * 0.9 / 2) = 46; warm-up end, steps 12..40 at 0.5 s: 62 s left -> 40 + 111
    assert returned == {12: 46, 40: 151} and fits == [(46, 12), (151, 40)]
    no_warmup = budget_module.TimeBudget(100.0, 0, 0.0, lambda *_: None)
    assert [s for s in range(1, 60) if no_warmup.after_step(s, TrainConfig(steps=100_000, log_interval=1)) is not None] == [12]


def test_a_refit_budget_runs_its_refit_total_and_records_both(tmp_path: Path, tiny_root: Path, monkeypatch) -> None:
    import icrl_bench.training.budget as budget_module

    monkeypatch.setattr(budget_module, "BUDGET_PROBE_STEPS", 4)
    monkeypatch.setattr(budget_module, "BUDGET_WARMUP_STEPS", 2)
    config = tiny_config(tmp_path, "ad", steps=100_000, log_interval=2, eval_interval=1_000, ckpt_interval=1_000)
    raw = yaml.safe_load(config.read_text())
    raw["train"]["warmup_steps"] = 12
    config.write_text(yaml.safe_dump(raw))
    clock = iter(range(10**6))
    monkeypatch.setattr(budget_module.time, "perf_counter", lambda: float(next(clock)))
    result = run(tmp_path, tiny_root, "ad", config_path=config, time_budget_s=60)
    budget = json.loads((result.run_dir / "run.json").read_text())["time_budget"]
    assert budget["probe_steps"] == 12 and budget["config_steps"] == 100_000 and "first_fitted_steps" in budget
    assert result.step == budget["fitted_steps"] > 12


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_at_a_step_boundary_and_the_resume_is_exact(signum: str, tmp_path: Path, tiny_root: Path) -> None:
    """Ctrl-C once resumed with other weights (a checkpoint taken mid-step); SIGTERM saved nothing."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tiny_config(tmp_path, "dicp-ad", steps=400, ckpt_interval=1000, eval_interval=1000, log_interval=1)
    straight = run(tmp_path / "a", tiny_root, "dicp-ad", config_path=config)
    args = [sys.executable, "-m", "icrl_bench", "train", "--agent", "dicp-ad", "--dataset", "darkroom-tiny-v3", "--config", str(config),
            "--device", "cpu", "--root", str(tiny_root), "--out", str(tmp_path / "b"), "--quiet", "--threads", "1"]
    # The same ATen kernels as this process, which torch fixed at its first op (an in-process build-dataset may have pinned them)
    kernels = {**os.environ, "ATEN_CPU_CAPABILITY": torch.backends.cpu.get_cpu_capability().lower()}
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=kernels)
    deadline = time.time() + 120

    def steps_logged() -> bool:  # the first training step is done: mid-training from here (however loaded the machine)
        return any('"lr"' in path.read_text() for path in (tmp_path / "b").glob("*/metrics.jsonl"))

    while time.time() < deadline and not steps_logged():
        time.sleep(0.05)
    process.send_signal(getattr(signal, signum))
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0 and "stopped at step" in err and "Traceback" not in err, err
    run_dir = next((tmp_path / "b").iterdir())
    stopped = json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())["step"]
    assert 0 < stopped < 400
    with open(run_dir / "metrics.jsonl", "a") as handle:  # a line written after the checkpoint, as a kill leaves
        handle.write(json.dumps({"step": stopped + 1, "loss": 0.0}) + "\n")
    resumed = train(resume=run_dir, device="cpu", show_progress=False)
    a = load_file(str(straight.run_dir / "checkpoint" / "model.safetensors"))
    b = load_file(str(resumed.run_dir / "checkpoint" / "model.safetensors"))
    assert resumed.step == 400 and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if "lr" in line]
    assert steps == sorted(set(steps)) and steps[-1] == 400


def test_a_sigterm_to_the_process_group_stops_at_a_step_boundary_with_loader_workers(tmp_path: Path, tiny_root: Path) -> None:
    """A scheduler's preemption (or `timeout`) signals the loader workers too: they leave cleanly, the trainer checkpoints."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = tiny_config(tmp_path, "ad", steps=100_000, ckpt_interval=1000, eval_interval=1000, log_interval=1)
    args = [sys.executable, "-m", "icrl_bench", "train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--config", str(config),
            "--device", "cpu", "--root", str(tiny_root), "--out", str(tmp_path / "runs"), "--quiet", "--threads", "1",
            "--set", "train.num_workers=2"]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/metrics.jsonl")):
        time.sleep(0.05)
    time.sleep(0.5)  # mid-training, the workers running
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert "stopped at step" in err and "Traceback" not in err, err
    run_dir = next((tmp_path / "runs").iterdir())
    stopped = json.loads((run_dir / "checkpoint" / "trainer_state.json").read_text())["step"]
    assert f"stopped at step {stopped}" in err


def test_keep_every_keeps_loadable_snapshots_for_learning_curves(tmp_path: Path, tiny_root: Path) -> None:
    from icrl_bench.agents.checkpoint import load_checkpoint

    result = run(tmp_path, tiny_root, "ad", overrides=["train.keep_every=3", "train.steps=7"])
    snapshots = sorted(p.name for p in (result.run_dir / "snapshots").iterdir())
    assert snapshots == ["step-3", "step-6"]
    loaded = load_checkpoint(result.run_dir / "snapshots" / "step-6", "ad")
    assert loaded.meta["step"] == 6 and not (result.run_dir / "snapshots" / "step-6" / "trainer_state.safetensors").exists()


def test_training_seconds_add_up_the_segments_of_a_resumed_run() -> None:
    from icrl_bench.run_records import training_seconds

    records = [{"step": 50, "elapsed_s": 10.0}, {"step": 100, "elapsed_s": 20.0}, {"step": 100, "val_loss": 1.0},
               {"step": 150, "elapsed_s": 8.0}, {"step": 200, "elapsed_s": 16.0}]  # resumed at step 100
    assert training_seconds(records) == 36.0 and training_seconds([{"step": 1}]) is None


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path: Path):
    from icrl_bench.training.run_dir import new_run_dir

    dirs = [new_run_dir(tmp_path / "runs", "ad", "darkroom-v2", None, "20261130-083336") for _ in range(3)]
    assert [d.name for d in dirs] == ["ad-darkroom-v2-paper-20261130-083336", "ad-darkroom-v2-paper-20261130-083336-2",
                                      "ad-darkroom-v2-paper-20261130-083336-3"]
    assert all(d.is_dir() and not any(d.iterdir()) for d in dirs)


def test_held_out_validation_goals_are_never_trained_nor_validated_on(tmp_path: Path, tiny_root: Path, tiny_dataset, monkeypatch) -> None:
    from icrl_bench.bench.protocols import validation_goals
    from icrl_bench.data import sampler as sampler_module
    from icrl_bench.training import loop

    goals = tuple(int(g) for g in validation_goals("darkroom"))
    tasks = {int(t) for t in tiny_dataset.task_index[tiny_dataset.train_rows]}
    held = tasks & set(goals)
    assert held  # the tiny dataset holds one of darkroom's validation goals (task 9)
    config = sampler_module.SamplerConfig(window=20, batch_size=8, exclude_tasks=goals)
    sampler = sampler_module.WindowSampler("darkroom-tiny-v3", tiny_root, config)
    sampled = {int(tiny_dataset.task_index[row]) for step in range(100) for row in sampler.batch(step)["row"]}
    assert sampled == tasks - held
    validated = {int(tiny_dataset.task_index[row]) for batch in sampler_module.validation_batches("darkroom-tiny-v3", tiny_root, config)
                 for row in batch["row"]}
    assert validated == tasks - held
    everything = sampler_module.SamplerConfig(window=20, batch_size=8, exclude_tasks=tuple(tasks))
    with pytest.raises(IcrlBenchError, match="every train task is held out"):
        sampler_module.WindowSampler("darkroom-tiny-v3", tiny_root, everything)
    # the trainer hands the protocol's validation goals to its sampler when the config says so
    made = []
    monkeypatch.setattr(loop, "WindowSampler", lambda *args, **kwargs: made.append(args[2]) or sampler_module.WindowSampler(*args, **kwargs))
    result = run(tmp_path, tiny_root, "ad", overrides=["train.hold_out_validation_goals=true", "train.steps=2"])
    assert made[0].exclude_tasks == goals
    assert json.loads((result.run_dir / "run.json").read_text())["config"]["train"]["hold_out_validation_goals"] is True
    with pytest.raises(IcrlBenchError, match="hold_out_validation_goals must be true or false"):
        run(tmp_path / "bad", tiny_root, "ad", overrides=["train.hold_out_validation_goals=1"])


def test_init_from_starts_dicp_from_the_imitation_agents_weights_with_fresh_heads(tmp_path: Path, tiny_root: Path) -> None:
    from icrl_bench.agents.models import build_model
    from icrl_bench.training.warm_start import init_from_checkpoint

    source = run(tmp_path / "dpt", tiny_root, "dpt")
    source_weights = load_file(str(source.run_dir / "checkpoint" / "model.safetensors"))
    config = load_run_config("dicp-dpt", "darkroom", config_path=tiny_config(tmp_path, "dicp-dpt")).model
    torch.manual_seed(0)
    cold = build_model("dicp-dpt", config).state_dict()
    torch.manual_seed(0)
    model = build_model("dicp-dpt", config)
    record = init_from_checkpoint(model, "dicp-dpt", config, source.run_dir)
    started = model.state_dict()
    assert all(torch.equal(started[k], v) for k, v in source_weights.items())
    heads = sorted(k for k in started if k not in source_weights)
    assert heads and all(k.startswith("dynamics.") for k in heads) and record["fresh_tensors"] == heads
    assert all(torch.equal(cold[k], started[k]) for k in heads)  # the heads keep the seeded fresh init
    assert not all(torch.equal(cold[k], v) for k, v in source_weights.items())

    warm = run(tmp_path / "dicp", tiny_root, "dicp-dpt", config_path=tiny_config(tmp_path, "dicp-dpt"), init_from=source.run_dir)
    recorded = json.loads((warm.run_dir / "run.json").read_text())["init_from"]
    assert recorded["agent"] == "dpt" and recorded["fresh_tensors"] == heads
    assert recorded["weights_sha256"] == json.loads((source.run_dir / "checkpoint" / "checkpoint.json").read_text())["weights_sha256"]


def test_init_from_refuses_another_network_or_a_resume(tmp_path: Path, tiny_root: Path) -> None:
    source = run(tmp_path / "dpt", tiny_root, "dpt")
    wider = tiny_config(tmp_path / "wide", "dicp-dpt")
    config = yaml.safe_load(wider.read_text())
    config["model"]["transformer"]["n_embd"] = 32
    wider.write_text(yaml.safe_dump(config))
    with pytest.raises(IcrlBenchError, match="differs from this run's.*transformer"):
        run(tmp_path / "a", tiny_root, "dicp-dpt", config_path=wider, init_from=source.run_dir)
    with pytest.raises(IcrlBenchError, match="another family"):
        run(tmp_path / "b", tiny_root, "dicp-ad", init_from=source.run_dir)
    with pytest.raises(IcrlBenchError, match="drop --init-from"):
        train(resume=source.run_dir, init_from=source.run_dir, show_progress=False)
    assert not (tmp_path / "a" / "runs").exists() or not any((tmp_path / "a" / "runs").iterdir())


def test_a_preset_can_name_its_warm_start_and_the_checkpoint_records_it(tmp_path: Path, tiny_root: Path) -> None:
    source = run(tmp_path / "dpt", tiny_root, "dpt")
    path = tiny_config(tmp_path, "dicp-dpt", init_from=str(source.run_dir))
    warm = run(tmp_path / "dicp", tiny_root, "dicp-dpt", config_path=path)
    recorded = json.loads((warm.run_dir / "run.json").read_text())
    assert recorded["init_from"]["agent"] == "dpt" and recorded["config"]["train"]["init_from"] == str(source.run_dir)
    checkpoint = json.loads((warm.run_dir / "checkpoint" / "checkpoint.json").read_text())
    assert checkpoint["train_config"]["init_from"] == str(source.run_dir)
    resumed = train(resume=warm.run_dir, show_progress=False)  # already finished: no second warm start, no error
    assert resumed.step == warm.step
    config = load_run_config("dicp-dpt", "darkroom-permuted", "laptop-warm")
    assert config.train.init_from == "baselines/darkroom-permuted/dpt" and (config.train.steps, config.train.time_budget_s) == (4500, 0)


def test_a_shipped_checkpoint_starts_a_run_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from icrl_bench.agents.checkpoint import load_checkpoint
    from icrl_bench.agents.models import build_model, model_config
    from icrl_bench.training.warm_start import init_from_checkpoint

    shipped_dpt = load_checkpoint(BASELINES_DIR / "darkroom-permuted" / "dpt")
    config = model_config("dicp-dpt", {k: v for k, v in shipped_dpt.model.config.to_dict().items() if k != "dynamics"})
    monkeypatch.chdir(tmp_path)  # the preset's relative path is found in the shipped tree, not the working directory
    model = build_model("dicp-dpt", config)
    record = init_from_checkpoint(model, "dicp-dpt", config, "baselines/darkroom-permuted/dpt")
    assert record["weights_sha256"] == shipped_dpt.meta["weights_sha256"]
    assert record["checkpoint"] == "baselines/darkroom-permuted/dpt/checkpoint"  # reads the same in every clone and wheel
    assert torch.equal(model.pred_action.weight, shipped_dpt.model.pred_action.weight)
    with pytest.raises(IcrlBenchError, match="no checkpoint"):
        init_from_checkpoint(model, "dicp-dpt", config, "baselines/darkroom-permuted/none")

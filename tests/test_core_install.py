"""The main job works with the core install alone (`pip install icrl-bench`, no extras).

The dev environment has every extra, so a core command that imports one by accident passes every
other test. It happened: `build-dataset` imported the Hub module to compare hashes with the
catalog and failed on a GPU machine without `datasets`. Here the extras' packages cannot be
imported, as on that machine.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

EXTRAS = ("datasets", "huggingface_hub", "pyarrow", "ray", "metaworld", "tensorboard", "wandb")

_DRIVER = textwrap.dedent(
    """
    import importlib.abc, sys
    blocked = set(sys.argv[1].split(","))

    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Absent())
    sys.argv = ["icrl-bench", *sys.argv[2:]]
    from icrl_bench.cli import main
    main()
    """
)


def core_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _DRIVER, ",".join(EXTRAS), *args], check=False, capture_output=True, text=True, timeout=300)


def test_the_driver_really_hides_the_extras():
    hidden = subprocess.run([sys.executable, "-c", _DRIVER.replace("from icrl_bench.cli import main\nmain()", "import datasets"), "datasets"],
                            check=False, capture_output=True, text=True)
    assert hidden.returncode != 0 and "No module named 'datasets'" in hidden.stderr


def test_build_train_evaluate_with_the_core_install_only(tmp_path):
    root, runs, results = tmp_path / "data", tmp_path / "runs", tmp_path / "results"
    built = core_cli("build-dataset", "darkroom", "--preset", "tiny", "--root", str(root), "--quiet")
    assert built.returncode == 0, built.stderr
    assert "built darkroom-tiny-v3" in built.stdout

    trained = core_cli("train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--root", str(root), "--out", str(runs), "--steps", "2",
                       "--set", "train.batch_size=4", "--set", "model.transformer.n_layer=1", "--set", "model.n_transit=20", "--quiet")
    assert trained.returncode == 0, trained.stderr
    run_dir = next(runs.iterdir())

    evaluated = core_cli("evaluate", "--agent", "ad", "--env", "darkroom", "--checkpoint", str(run_dir), "--seeds", "0", "--episodes", "2",
                         "--tasks", "2", "--out", str(results), "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    assert list(results.glob("*.json"))

"""Every command, fed bad input as a hostile user would: exit code 1 or 2, one line, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from icrl_bench.cli import app


def _files(tmp: Path) -> dict[str, str]:
    """Bad files of every kind the commands read, by the name CASES use for them."""
    files = {
        "garbage_json": "{not json",
        "list_json": "[1, 2, 3]",
        "empty_json": "{}",
        "list_yaml": "- 1\n- 2\n",
        "model_list_yaml": "agent: ad\nenv: darkroom\nmodel: [1, 2]\n",
        "train_list_yaml": "agent: ad\nenv: darkroom\ntrain: [1, 2]\n",
        "typed_yaml": "agent: ad\nenv: darkroom\ntrain: {lr: fast}\n",
        "not_hdf5": "plain text",
        "afile": "x",
    }
    for name, text in files.items():
        (tmp / name).write_text(text)
    (tmp / "run").mkdir()
    (tmp / "run" / "run.json").write_text("{garbage")
    return {name: str(tmp / name) for name in [*files, "run"]}


CASES = [
    ["build-dataset", "darkroomm"],
    ["build-dataset", "darkroom", "--preset", "huge"],
    ["build-dataset", "darkroom", "--workers", "0"],
    ["build-dataset", "darkroom", "--source", "dqn"],
    ["build-dataset", "darkroom", "--device", "tpu"],
    ["build-dataset", "metaworld-ml1", "--task", "reachh"],
    ["build-dataset", "darkroom", "--seed", "abc"],
    ["datasets", "info", "nope-v1"],
    ["datasets", "info", "../../etc-v1"],
    ["datasets", "info", "darkroom-v3", "--tasks", "x"],
    ["datasets", "verify", "/etc"],
    ["datasets", "show", "nope-v1"],
    ["datasets", "show", "../../etc-v1"],
    ["datasets", "import", "{afile}"],
    ["datasets", "import", "{run}"],
    ["datasets", "import", "{run}", "--format", "hf", "--id", "x-v1"],
    ["datasets", "verify", "Bad Id"],
    ["datasets", "delete", "../x", "--yes"],
    ["datasets", "delete", "nope-v1", "--yes"],
    ["datasets", "import", "{not_hdf5}", "--env", "darkroom"],
    ["datasets", "import", "{afile}", "--env", "nowhere"],
    ["datasets", "import", "/no/such.hdf5", "--env", "darkroom"],
    ["datasets", "import", "{not_hdf5}", "--env", "darkroom", "--id", "../../x"],
    ["datasets", "export", "nope-v1", "--out", "{afile}"],
    ["datasets", "push", "nope-v1", "--repo", "./somewhere"],
    ["datasets", "push", "darkroom-tiny-v3", "--repo", "not a repo!"],
    ["datasets", "download", "::::"],
    ["datasets", "download", "nope-v1"],
    ["datasets", "download", "org/name@v1", "--hash", "xyz"],
    ["train"],
    ["train", "--agent", "add", "--dataset", "darkroom-tiny-v3"],
    ["train", "--agent", "ad", "--dataset", "nope-v1"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--preset", "gpu"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--steps", "0"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--threads", "0"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--device", "cuda:99"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--set", "lr=1"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--set", "train.nope=1"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--set", "model.layout=sparse"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--set", "model.transformer=3"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--log", "mlflow"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--time-budget", "-5"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--config", "{garbage_json}"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--config", "{list_yaml}"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--config", "{model_list_yaml}"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--config", "{train_list_yaml}"],
    ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--config", "{typed_yaml}"],
    ["train", "--resume", "{run}"],
    ["train", "--resume", "/no/such/run"],
    ["evaluate", "--agent", "nope"],
    ["evaluate", "--agent", "ad", "--env", "mars"],
    ["evaluate", "--agent", "ad", "--checkpoint", "/no/such"],
    ["evaluate", "--agent", "random", "--seeds", "a,b"],
    ["evaluate", "--agent", "random", "--episodes", "0"],
    ["evaluate", "--agent", "random", "--beam", "3"],
    ["evaluate", "--agent", "random", "--threads", "0"],
    ["leaderboard", "verify", "leaderboard/entries/none.json", "--threads", "0"],
    ["evaluate", "--agent", "random", "--set", "=1"],
    ["evaluate", "--agent", "no.such.module:Agent"],
    ["evaluate", "--agent", "random", "--env", "darkroom/v99"],
    ["evaluate", "--agent", "random", "--out", "{afile}"],
    ["leaderboard", "submit", "{garbage_json}"],
    ["leaderboard", "submit", "{list_json}"],
    ["leaderboard", "submit", "{empty_json}"],
    ["leaderboard", "submit", "/no/such.json"],
    ["leaderboard", "verify", "{empty_json}"],
    ["leaderboard", "show", "--env", "mars"],
    ["leaderboard", "show", "--format", "xml"],
    ["results", "upgrade", "{garbage_json}"],
    ["results", "upgrade", "{empty_json}"],
    ["results", "export", "{list_json}"],
    ["results", "export", "{empty_json}"],
    ["results", "export", "--env", "mars"],
    ["results", "export", "{empty_json}", "--format", "csv"],
    ["reproduce", "mars"],
    ["reproduce", "darkroom", "--agents", "ad,nope"],
    ["reproduce", "darkroom", "--budget", "infinite"],
    ["agents", "frobnicate"],
]


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c)[:60] for c in CASES])
def test_bad_input_is_one_line_without_a_traceback(argv, tmp_path, tiny_root):
    files = _files(tmp_path)
    args = [a.format(**files) for a in argv]
    if args[0] in ("datasets", "train", "build-dataset") and "--root" not in args and args[:2] != ["datasets", "download"]:
        args += ["--root", str(tiny_root)] if args[0] != "build-dataset" else ["--root", str(tmp_path / "root")]
    result = CliRunner().invoke(app, args, catch_exceptions=True)
    output = result.output.strip()
    assert result.exit_code in (1, 2), (args, result.exit_code, output, repr(result.exception))
    assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
    assert "Traceback" not in output, (args, output)
    if result.exit_code == 1:  # ours; exit 2 is click's usage message
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, output)


def test_the_table_is_large():
    assert len(CASES) >= 50

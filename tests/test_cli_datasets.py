"""Every dataset command through typer's test runner, including its errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icrl_bench.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Tables are as wide as a real terminal, so cells are not cut in the captured output."""
    from icrl_bench import cli

    monkeypatch.setattr(cli.console, "size", (200, 50))


def run(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


@pytest.fixture
def copy_root(tiny_root: Path, tmp_path: Path) -> Path:
    shutil.copytree(tiny_root / "datasets", tmp_path / "datasets")
    return tmp_path


def test_build_list_info_verify_delete(tmp_path):
    result = run("build-dataset", "darkroom", "--preset", "tiny", "--workers", "1", "--quiet", "--root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "built darkroom-tiny-v3" in result.output
    again = run("build-dataset", "darkroom", "--preset", "tiny", "--quiet", "--root", str(tmp_path))
    assert again.exit_code == 0 and "already built" in again.output
    listing = run("datasets", "list", "--root", str(tmp_path))
    assert listing.exit_code == 0 and "darkroom-tiny-v3" in listing.output and "batched-ppo" in listing.output
    info = run("datasets", "info", "darkroom-tiny-v3", "--root", str(tmp_path), "--tasks", "0")
    assert info.exit_code == 0, info.output
    assert "9 tasks x 4 streams x 200 steps" in info.output and "first episode" in info.output
    assert "beats the first on" in info.output
    verify = run("datasets", "verify", "darkroom-tiny-v3", "--root", str(tmp_path))
    assert verify.exit_code == 0 and "9 arrays match" in verify.output
    declined = run("datasets", "delete", "darkroom-tiny-v3", "--root", str(tmp_path), input="n\n")
    assert declined.exit_code == 1 and (tmp_path / "datasets" / "darkroom-tiny-v3").exists()
    deleted = run("datasets", "delete", "darkroom-tiny-v3", "--root", str(tmp_path), input="y\n")
    assert deleted.exit_code == 0 and not (tmp_path / "datasets" / "darkroom-tiny-v3").exists()


def test_verify_reports_a_flipped_byte_in_one_line(copy_root):
    chunk = next(p for p in (copy_root / "datasets" / "darkroom-tiny-v3" / "done").rglob("*") if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x10
    chunk.write_bytes(bytes(data))
    result = run("datasets", "verify", "darkroom-tiny-v3", "--root", str(copy_root))
    assert result.exit_code == 1
    assert "error: array 'done'" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["build-dataset", "darkrom"], "unknown dataset recipe 'darkrom'"),
        (["build-dataset", "darkroom", "--preset", "huge"], "unknown preset of darkroom 'huge'"),
        (["datasets", "info", "darkroom-v7"], "unknown dataset id 'darkroom-v7'"),
        (["datasets", "verify", "darkroom-small-v3"], "build it with `icrl-bench build-dataset darkroom --preset small`"),
        (["datasets", "delete", "nope-v1", "--yes"], "unknown dataset id 'nope-v1'"),
        (["datasets", "import", "missing.hdf5", "--env", "darkroom"], "no file at missing.hdf5"),
        (["datasets", "import", "x.h5", "--env", "darkroom", "--format", "csv"], "unknown import format 'csv'"),
    ],
)
def test_user_mistakes_end_in_one_line(args, message):
    result = run(*args)
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("\n") <= 2 and "Traceback" not in result.output


def test_empty_root_says_how_to_start(tmp_path):
    result = run("datasets", "list", "--root", str(tmp_path))
    assert result.exit_code == 0 and "build-dataset darkroom --preset small" in result.output


def test_import_command(tmp_path):
    from tests.test_dicp_import import write_official_file

    write_official_file(tmp_path / "h.hdf5", "darkroom", n_tasks=2)
    result = run("datasets", "import", str(tmp_path / "h.hdf5"), "--env", "darkroom", "--id", "official-v1", "--root", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "imported" in result.output and (tmp_path / "datasets" / "official-v1").is_dir()


def test_ids_never_escape_the_data_root(tmp_path):
    """`datasets delete /some/dir` or `../../x` once deleted any directory; ids now follow the id grammar."""
    from typer.testing import CliRunner

    from icrl_bench.cli import app

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    root = tmp_path / "root"
    (root / "datasets").mkdir(parents=True)
    runner = CliRunner()
    for bad in (str(victim), "../../victim", "../victim-v1", "Bad Id/x-v1", "darkroom-v3/../../victim"):
        for command in (["datasets", "delete", bad, "--yes"], ["datasets", "verify", bad], ["datasets", "info", bad]):
            result = runner.invoke(app, [*command, "--root", str(root)])
            assert result.exit_code == 1 and "is not a dataset id" in result.output and "Traceback" not in result.output, (command, result.output)
    result = runner.invoke(app, ["datasets", "import", str(tmp_path / "x.hdf5"), "--env", "darkroom", "--id", "../../victim-v1",
                                 "--root", str(root)])
    assert result.exit_code == 1 and "is not a dataset id" in result.output and "Traceback" not in result.output
    assert (victim / "keep.txt").read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == ["root", "victim"]

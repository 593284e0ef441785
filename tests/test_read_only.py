"""Places the user chose that cannot be written: one line naming the place and the fix, nothing half-done.

A directory is made unwritable with `chattr +i` (which binds root too) or, for another user,
`chmod 555`; where neither takes effect the test is skipped and says why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icrl_bench.cli import app


@contextlib.contextmanager
def unwritable(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(directory)], capture_output=True, check=False).returncode:
            pytest.skip("running as root without a file system that supports chattr +i: cannot make a directory unwritable")
        undo = ["chattr", "-i", str(directory)]
    else:
        directory.chmod(0o555)
        undo = ["chmod", "755", str(directory)]
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert len(result.output.strip().splitlines()) <= 3, result.output  # one message (rich may wrap it)
    for word in words:
        assert word in result.output, result.output


def copy_root(tiny_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(tiny_root / "datasets", root / "datasets")
    return root


def test_commands_writing_into_an_unwritable_directory_fail_at_once(tmp_path: Path, tiny_root: Path) -> None:
    runner = CliRunner()
    locked = tmp_path / "locked"
    with unwritable(locked):
        evaluate = runner.invoke(app, ["evaluate", "--agent", "random", "--out", str(locked / "results"), "-q"])
        one_line_error(evaluate, "--out", "choose a directory you can write to")
        train = runner.invoke(app, ["train", "--agent", "ad", "--dataset", "darkroom-tiny-v3", "--root", str(tiny_root), "--steps", "2",
                                    "--out", str(locked), "-q"])
        one_line_error(train, "--out", "cannot write in")
        export = runner.invoke(app, ["datasets", "export", "darkroom-tiny-v3", "--root", str(tiny_root), "--out", str(locked / "card")])
        one_line_error(export, "cannot write")
        render = runner.invoke(app, ["leaderboard", "render", "--dir", str(locked)])
        one_line_error(render, "cannot write")
        assert list(locked.iterdir()) == []  # nothing was made


def test_a_build_into_an_unwritable_data_root_fails_before_any_work(tmp_path: Path, tiny_root: Path) -> None:
    root = copy_root(tiny_root, tmp_path)
    with unwritable(root / "datasets"):
        result = CliRunner().invoke(app, ["build-dataset", "darkroom-permuted", "--preset", "tiny", "--root", str(root), "-q"])
        one_line_error(result, "data root", "--root")
    assert not (root / "staging" / "darkroom-permuted-tiny-v3").exists()  # no PPO was run


def test_a_refused_delete_leaves_the_dataset_whole(tmp_path: Path, tiny_root: Path) -> None:
    root = copy_root(tiny_root, tmp_path)
    runner = CliRunner()
    with unwritable(root / "datasets"):
        result = runner.invoke(app, ["datasets", "delete", "darkroom-tiny-v3", "--root", str(root), "--yes"])
        one_line_error(result, "cannot write")
    verify = runner.invoke(app, ["datasets", "verify", "darkroom-tiny-v3", "--root", str(root)])
    assert verify.exit_code == 0 and "match their hashes" in verify.output, verify.output
    deleted = runner.invoke(app, ["datasets", "delete", "darkroom-tiny-v3", "--root", str(root), "--yes"])
    assert deleted.exit_code == 0 and list((root / "datasets").iterdir()) == []

"""Where icrl-bench keeps data: a user cache directory unless told otherwise."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from platformdirs import user_cache_dir

from icrl_bench.errors import IcrlBenchError

ROOT_ENV_VAR = "ICRL_BENCH_ROOT"
REPO_ROOT = Path(__file__).resolve().parents[1]


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root` if given, else $ICRL_BENCH_ROOT, else the user cache dir."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(ROOT_ENV_VAR):
        return Path(os.environ[ROOT_ENV_VAR]).expanduser()
    return Path(user_cache_dir("icrl-bench"))


def ensure_writable(directory: Path) -> Path:
    """Create `directory` and check a file can be written there, or fail with the fix."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise IcrlBenchError(
            f"data root {directory} is not writable ({err.strerror}); pass --root DIR or set {ROOT_ENV_VAR}."
        ) from None
    return directory

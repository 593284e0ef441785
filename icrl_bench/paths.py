"""Where icrl-bench keeps data: a user cache directory unless told otherwise."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

from platformdirs import user_cache_dir

from icrl_bench.errors import IcrlBenchError

ROOT_ENV_VAR = "ICRL_BENCH_ROOT"
CATALOG_ENV_VAR = "ICRL_BENCH_CATALOG"
REPO_ROOT = Path(__file__).resolve().parents[1]
DATASET_ID_PATTERN = re.compile(r"^(?P<name>[a-z0-9]+(?:-[a-z0-9]+)*)-v(?P<version>[0-9]+)$")
"""The dataset id grammar, here (torch-free) so that the leaderboard checks ids as the data half does."""


def _recipe_dir() -> Path:
    """datasets/ of a source checkout, else the copy a wheel installs under sys.prefix."""
    checkout = REPO_ROOT / "datasets"
    return checkout if checkout.is_dir() else Path(sys.prefix) / "share" / "icrl-bench" / "datasets"


RECIPE_DIR = _recipe_dir()  # the dataset recipes, and the catalog beside them
CATALOG_FILE = "catalog.yaml"
DEFAULT_CATALOG = RECIPE_DIR / CATALOG_FILE


def catalog_path(path: str | os.PathLike | None = None) -> Path:
    """`path`, else $ICRL_BENCH_CATALOG, else the catalog shipped in `datasets/`."""
    if path is not None:
        return Path(path).expanduser()
    return Path(os.environ[CATALOG_ENV_VAR]).expanduser() if os.environ.get(CATALOG_ENV_VAR) else DEFAULT_CATALOG


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

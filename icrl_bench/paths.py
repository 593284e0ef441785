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


def repo_relative(path: str | os.PathLike) -> str:
    """`path` relative to the repository when inside it (it reads the same in every clone), else as given."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT.resolve()).as_posix()
    except ValueError:
        return str(path)


def check_dataset_id(dataset_id: str) -> str:
    """`dataset_id` if it follows the id grammar; a path-like id (`../x`, `/abs`) never reaches the file system."""
    if not isinstance(dataset_id, str) or not DATASET_ID_PATTERN.match(dataset_id):
        raise IcrlBenchError(
            f"{dataset_id!r} is not a dataset id: ids are lowercase words joined by '-' ending in -v<N> "
            "(e.g. darkroom-small-v3); see `icrl-bench datasets list`."
        )
    return dataset_id


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


def check_writable(directory: Path, what: str, fix: str) -> None:
    """Fail with one line naming `what` and the `fix` if `directory` cannot take a new file.

    While `directory` does not exist, the nearest existing directory above it (where it would be
    made) is checked instead; nothing is created.
    """
    probe = Path(directory).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise IcrlBenchError(f"{what} is not writable ({probe} is a file); {fix}.")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise IcrlBenchError(f"{what} is not writable (cannot write in {probe}: {err.strerror}); {fix}.") from None


def ensure_writable(directory: Path, *subdirs: str) -> Path:
    """Create the data root `directory` and check that it and its `subdirs` can take new files, or fail with the fix."""
    fix = f"pass --root DIR or set {ROOT_ENV_VAR}, or fix its permissions"
    check_writable(directory, f"data root {directory}", fix)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise IcrlBenchError(f"data root {directory} cannot be made ({err.strerror}); {fix}.") from None
    for sub in subdirs:
        check_writable(directory / sub, f"data root {directory}", fix)
    return directory

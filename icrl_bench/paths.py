"""Where icrl-bench finds what it ships and keeps what it makes.

Read-only, shipped with the code: the training configs and checkpoints (`baselines/`), the dataset
recipes, catalog and small dataset (`datasets/`), the paper's numbers and laptop checkpoints
(`reproduction/`) and the reference leaderboard (`leaderboard/`). From a checkout they are the
repository's own directories; a wheel carries a copy inside the package (`icrl_bench/_shipped/`,
see setup.py and MANIFEST.in). Written: datasets under the data root (a user cache directory
unless told otherwise) and the leaderboard directory (the repository's, else a user data directory).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir

from icrl_bench.errors import IcrlBenchError

ROOT_ENV_VAR = "ICRL_BENCH_ROOT"
CATALOG_ENV_VAR = "ICRL_BENCH_CATALOG"
LEADERBOARD_ENV_VAR = "ICRL_BENCH_LEADERBOARD"
REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout's top (git provenance); in an installed package, the site-packages directory."""
PACKAGED_ROOT = Path(__file__).resolve().parent / "_shipped"
"""Where a wheel puts its copy of the shipped tree (setup.py's build_py)."""
DATASET_ID_PATTERN = re.compile(r"^(?P<name>[a-z0-9]+(?:-[a-z0-9]+)*)-v(?P<version>[0-9]+)$")
"""The dataset id grammar, here (torch-free) so that the leaderboard checks ids as the data half does."""


def _in_checkout() -> bool:
    """Whether the code runs from a source checkout (or an editable install of one): its
    pyproject.toml and baselines/ beside the package, which site-packages never has."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "baselines").is_dir()


IN_CHECKOUT = _in_checkout()
SHIPPED_ROOT = REPO_ROOT if IN_CHECKOUT else PACKAGED_ROOT
"""The read-only shipped tree: the checkout itself, else the copy inside the installed package."""


def shipped(*parts: str) -> Path:
    """A path in the shipped tree (`shipped("baselines", "darkroom", "ad.yaml")`), whether run from a checkout or a wheel."""
    return SHIPPED_ROOT.joinpath(*parts)


def require_shipped(*parts: str) -> Path:
    """`shipped(*parts)`, or a one-line error saying the installation lacks it (a wheel built without its data)."""
    path = shipped(*parts)
    if not path.exists():
        raise IcrlBenchError(
            f"{'/'.join(parts)} is missing from this installation ({path}); reinstall icrl-bench from a complete wheel "
            "or sdist, or run it from a checkout of the repository."
        )
    return path


def repo_relative(path: str | os.PathLike) -> str:
    """`path` relative to the shipped tree when inside it (`baselines/darkroom/ad` reads the same in every
    clone and in every installed wheel), else as given."""
    try:
        return Path(path).resolve().relative_to(SHIPPED_ROOT.resolve()).as_posix()
    except ValueError:
        return str(path)


def from_repo_relative(path: str | os.PathLike) -> Path:
    """The inverse of `repo_relative` for a path a results file or leaderboard entry recorded: a relative
    one that names something in the shipped tree is that; any other is as given (relative to the cwd)."""
    given = Path(path)
    return SHIPPED_ROOT / given if not given.is_absolute() and (SHIPPED_ROOT / given).exists() else given


def check_dataset_id(dataset_id: str) -> str:
    """`dataset_id` if it follows the id grammar; a path-like id (`../x`, `/abs`) never reaches the file system."""
    if not isinstance(dataset_id, str) or not DATASET_ID_PATTERN.match(dataset_id):
        raise IcrlBenchError(
            f"{dataset_id!r} is not a dataset id: ids are lowercase words joined by '-' ending in -v<N> "
            "(e.g. darkroom-small-v3); see `icrl-bench datasets list`."
        )
    return dataset_id


RECIPE_DIR = shipped("datasets")  # the dataset recipes, and the catalog beside them
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


def default_leaderboard_dir() -> Path:
    """The repository's leaderboard/ when run from a checkout; from an installed package (whose own
    copy is read-only), the user data directory's (`~/.local/share/icrl-bench/leaderboard` on Linux)."""
    return REPO_ROOT / "leaderboard" if IN_CHECKOUT else Path(user_data_dir("icrl-bench")) / "leaderboard"


def leaderboard_dir(path: str | os.PathLike | None = None) -> Path:
    """The leaderboard directory: `path` if given (--dir), else $ICRL_BENCH_LEADERBOARD, else the default."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(LEADERBOARD_ENV_VAR):
        return Path(os.environ[LEADERBOARD_ENV_VAR]).expanduser()
    return default_leaderboard_dir()


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

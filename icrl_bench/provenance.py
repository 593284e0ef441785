"""What made an artifact: package versions, code commit, machine. Recorded automatically."""

from __future__ import annotations

import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata

from icrl_bench.documents import Document
from icrl_bench.paths import IN_CHECKOUT, REPO_ROOT

TRACKED_PACKAGES = ("icrl-bench", "numpy", "torch", "gymnasium", "stable-baselines3", "zarr", "h5py")
OPTIONAL_PACKAGES = ("metaworld", "mujoco")  # recorded only where installed (the metaworld extra)


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    versions = {}
    for name in names + OPTIONAL_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name not in OPTIONAL_PACKAGES:
                versions[name] = "not installed"
    return versions


def code_commit() -> str | None:
    """The git commit of the icrl-bench checkout (with '-dirty' if it has changes), if any. An installed
    package has none: git run in its site-packages would name whatever repository holds the venv."""
    if not IN_CHECKOUT:
        return None
    try:
        run = lambda *args: subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        commit = run("rev-parse", "HEAD")
        return commit + ("-dirty" if run("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine() -> dict[str, str]:
    return {"python": platform.python_version(), "platform": platform.platform(), "processor": platform.machine()}


def provenance() -> dict:
    """Everything above, plus the time, as plain JSON-ready data."""
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "packages": package_versions(),
        "code_commit": code_commit(),
        "machine": machine(),
    }


class Provenance(Document):
    """`provenance()` as a schema, for the documents that carry it (dataset manifests, results)."""

    created_at: str
    packages: dict[str, str]
    code_commit: str | None
    machine: dict[str, str]

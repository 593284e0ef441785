"""Build hook: a wheel carries the repository's shipped tree inside the package.

The configs and checkpoints (`baselines/`), the recipes, catalog and small dataset (`datasets/`), the
paper's numbers and laptop checkpoints (`reproduction/`) and the reference leaderboard
(`leaderboard/`) stay at the top of the repository, where they are edited and reviewed; a built
package gets a copy at `icrl_bench/_shipped/`, which `icrl_bench.paths.shipped` reads when not run
from a checkout. Which files go is MANIFEST.in's one rule (the sdist's list), so a wheel built from
the sdist holds exactly what one built from the checkout does. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED_DIRS = ("baselines", "datasets", "leaderboard", "reproduction")
PACKAGE_TARGET = Path("icrl_bench", "_shipped")


class BuildPyWithShippedTree(build_py):
    """`build_py` into an emptied build/lib/icrl_bench, then the shipped tree's files (those MANIFEST.in
    selects) copied into the package."""

    def run(self) -> None:
        if self.editable_mode:  # an editable install reads the checkout's own directories
            super().run()
            return
        # setuptools never removes what an earlier build left in build/lib: a module since moved or
        # deleted would ride along in every later wheel built from this tree.
        shutil.rmtree(Path(self.build_lib) / "icrl_bench", ignore_errors=True)
        super().run()
        self.run_command("egg_info")
        files = [Path(f) for f in self.get_finalized_command("egg_info").filelist.files]
        target = Path(self.build_lib) / PACKAGE_TARGET
        for source in files:
            if source.parts[0] in SHIPPED_DIRS and source.is_file():
                (target / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / source)


setup(cmdclass={"build_py": BuildPyWithShippedTree})

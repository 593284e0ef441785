"""Process-level settings: the heap that keeps freed memory, set for this process and its children."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from icrl_bench.devices import HEAP_SETTINGS, keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_reaches_child_processes_and_leaves_a_users_setting(monkeypatch) -> None:
    for variable in HEAP_SETTINGS:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")  # the user's own: kept
    assert keep_freed_memory()
    assert os.environ["MALLOC_MMAP_THRESHOLD_"] == str(32 << 20)
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "12345"
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['MALLOC_MMAP_THRESHOLD_'], os.environ['MALLOC_TRIM_THRESHOLD_'])"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.split() == [str(32 << 20), "12345"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_cli_sets_the_heap_for_the_workers_it_starts() -> None:
    env = {k: v for k, v in os.environ.items() if k not in HEAP_SETTINGS}
    script = ("import os; from icrl_bench.cli import app; app(['agents', 'list'], standalone_mode=False); "
              "print('heap', os.environ.get('MALLOC_TRIM_THRESHOLD_'))")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert f"heap {1 << 30}" in out

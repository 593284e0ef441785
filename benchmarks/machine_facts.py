"""The machine a benchmark ran on, recorded next to its figures (timings mean little without it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from icrl_bench.provenance import code_commit, machine


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_facts() -> dict:
    """CPU model, cores, torch threads and version, the rest of `provenance.machine()` and the code commit."""
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        **machine(), "code_commit": code_commit(),
    }

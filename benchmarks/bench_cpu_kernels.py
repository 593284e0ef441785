"""What does pinning ATen's CPU kernels to AVX2 cost? A build and a training, on both kernels, one run.

Why: `icrl-bench build-dataset` (and `reproduce`, which builds and then trains) sets
ATEN_CPU_CAPABILITY=avx2 on x86-64, so that an AVX512 CPU builds the bytes the catalog pins
(docs/datasets.md, "Measured limit"). On such a CPU that gives up the AVX512 kernels; this
measures what that costs. Each step runs as its own command in a fresh process (torch fixes its
kernels at a process's first op), one torch thread, one after the other:

- build: `build-dataset darkroom --preset small --workers 1` (81 goals x 10 streams);
- train: `train --agent ad --preset cpu --steps N` on the dataset just built.

Reported: wall seconds per kernel, the ratio pinned / native, and each build's content hash (the
pinned one should be the catalog's). On a CPU whose best kernels are AVX2 the two are the same.

    .venv/bin/python benchmarks/bench_cpu_kernels.py              # ~3 min on a 2-core CPU
    .venv/bin/python benchmarks/bench_cpu_kernels.py --steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "cpu_kernels.json"
PINNED = "avx2"


def native_kernels() -> str:
    """The kernels torch picks by itself on this CPU (in a fresh process, with no setting)."""
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout.strip().lower()


def timed_command(args: list[str], kernels: str) -> float:
    env = os.environ | {"ATEN_CPU_CAPABILITY": kernels, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "icrl_bench", *args], env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def measure(kernels: str, steps: int, work: Path) -> dict:
    root = work / kernels
    build_s = timed_command(["build-dataset", "darkroom", "--preset", "small", "--workers", "1", "--quiet", "--root", str(root)], kernels)
    manifest = json.loads((root / "datasets" / "darkroom-small-v3" / "zarr.json").read_text())["attributes"]["icrl_bench"]
    train_s = timed_command(["train", "--agent", "ad", "--dataset", "darkroom-small-v3", "--root", str(root), "--preset", "cpu",
                             "--steps", str(steps), "--threads", "1", "--quiet", "--out", str(work / f"runs-{kernels}")], kernels)
    return {"kernels": manifest["build"]["torch_cpu_capability"], "build_s": round(build_s, 1), "train_s": round(train_s, 1),
            "content_hash": manifest["content_hash"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps of the AD run")
    args = parser.parse_args()
    native = native_kernels()
    print(f"{platform.processor() or platform.machine()}: torch's own kernels {native.upper()}, pinned {PINNED.upper()}")
    with tempfile.TemporaryDirectory() as work:
        rows = {name: measure(name, args.steps, Path(work)) for name in dict.fromkeys([PINNED, native])}
    for name, row in rows.items():
        print(f"  {name:>7}: build {row['build_s']:6.1f} s, train {args.steps} steps {row['train_s']:6.1f} s, "
              f"hash {row['content_hash'][:12]} (ran {row['kernels']})")
    pinned, mine = rows[PINNED], rows[native]
    ratios = {"build": pinned["build_s"] / mine["build_s"], "train": pinned["train_s"] / mine["train_s"]}
    print(f"pinned / native wall time: build {ratios['build']:.2f}x, train {ratios['train']:.2f}x")
    RESULTS.write_text(json.dumps({"machine": platform.machine(), "native_kernels": native, "steps": args.steps, "runs": rows,
                                   "ratio_pinned_over_native": {k: round(v, 3) for k, v in ratios.items()}}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

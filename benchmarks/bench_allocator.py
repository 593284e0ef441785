"""glibc's default heap vs. `devices.keep_freed_memory()` (what the CLI sets), on a DICP evaluation, in one run.

  default   glibc hands large freed blocks back to the kernel (mmap threshold adapting up to
            32 MiB, trim threshold twice it), so every planning level faults its caches in again
  kept      mmap threshold 32 MiB, trim threshold 1 GiB: freed blocks stay in the heap for reuse

Each way runs the same short evaluation (default: the shipped Darkroom DICP-DPT, the standard 8
test goals x 5 seeds, 8 episodes, of which 80 steps plan) in a fresh process on one thread, and the
script prints wall, user and kernel seconds, minor page faults, acting seconds, the ratio, and
whether both gave the same curves. Usage:

    python benchmarks/bench_allocator.py
    python benchmarks/bench_allocator.py --agent dicp-ad --episodes 6
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

from icrl_bench.devices import HEAP_SETTINGS

CHILD = """
import hashlib, json, sys, torch
from icrl_bench.devices import keep_freed_memory
if sys.argv[1] == "kept":
    assert keep_freed_memory()
torch.set_num_threads(1)
from icrl_bench.bench.harness import evaluate
from icrl_bench.paths import shipped
res = evaluate(sys.argv[2], shipped(f"baselines/darkroom/{sys.argv[2]}"), "darkroom", None, int(sys.argv[3]), {})
c = res["cost"]
print(json.dumps({"act_s": c["act_s_per_step"] * c["steps"], "curves": hashlib.sha256(json.dumps(res["curves"]).encode()).hexdigest()}))
"""


def run(way: str, agent: str, episodes: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in HEAP_SETTINGS}  # the default: glibc's own
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, way, agent, str(episodes)], env=env, check=True, capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_s": wall, "user_s": after.ru_utime - before.ru_utime, "kernel_s": after.ru_stime - before.ru_stime,
            "minor_faults": after.ru_minflt - before.ru_minflt, **json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", default="dicp-dpt")
    parser.add_argument("--episodes", type=int, default=8)
    args = parser.parse_args()
    results = {way: run(way, args.agent, args.episodes) for way in ("default", "kept")}
    for way, r in results.items():
        print(f"{way:8s} wall {r['wall_s']:6.1f} s  user {r['user_s']:6.1f} s  kernel {r['kernel_s']:5.1f} s  "
              f"minor faults {r['minor_faults']:>9,}  acting {r['act_s']:6.1f} s")
    d, k = results["default"], results["kept"]
    print(f"{args.agent}, {args.episodes} episodes: wall {d['wall_s'] / k['wall_s']:.2f}x, kernel time {d['kernel_s'] / max(k['kernel_s'], 1e-9):.1f}x less, "
          f"faults {d['minor_faults'] / max(k['minor_faults'], 1):.1f}x fewer; same curves: {d['curves'] == k['curves']}")


if __name__ == "__main__":
    main()

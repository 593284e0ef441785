"""Rotary positions: the half-width formula vs. the full-width one transformer.apply_rotary uses, in one run.

  half-width   x1 cos - x2 sin and x1 sin + x2 cos on the two halves, then one concatenation
               (seven kernels; what the Transformer did before)
  full-width   x * (cos, cos) + (x2, x1) * (-sin, sin) (three full-width kernels and one
               concatenation; angles laid out once per forward by `rotary_angles`)

The networks are tiny (head size 8), so rotation is memory-bound: fewer passes over q and k is
the whole gain. It checks the two give the same floats and prints the time per call and the
ratio for the shape of a DICP-DPT planning level on Darkroom (600 prefixes x 4 heads x 80 tokens).
Usage:

    python benchmarks/bench_rotary.py
    python benchmarks/bench_rotary.py --batch 64 --tokens 200
"""

from __future__ import annotations

import argparse

import torch
from timing import per_call_ms

from icrl_bench.agents.transformer import apply_rotary, rotary_angles


def half_width(x: torch.Tensor, positions: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos().float(), angles.sin().float()
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


def full_width(x: torch.Tensor, positions: torch.Tensor, head_dim: int, base: float) -> torch.Tensor:
    return apply_rotary(x, *rotary_angles(positions, head_dim, base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=600)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=80)
    parser.add_argument("--head-dim", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(args.batch, args.heads, args.tokens, args.head_dim)
    positions = torch.arange(args.tokens)
    same = torch.equal(half_width(x, positions, args.head_dim, 1e4), full_width(x, positions, args.head_dim, 1e4))
    old = per_call_ms(half_width, x, positions, args.head_dim, 1e4, repeats=args.repeats)
    new = per_call_ms(full_width, x, positions, args.head_dim, 1e4, repeats=args.repeats)
    print(f"x {list(x.shape)}, {torch.get_num_threads()} thread(s): half-width {old:.2f} ms, full-width {new:.2f} ms, "
          f"{old / new:.2f}x; same floats: {same}")


if __name__ == "__main__":
    main()

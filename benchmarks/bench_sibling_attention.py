"""Sibling attention (a planner's A action queries off each beam's cache): masked SDPA vs. one softmax, in one run.

  masked SDPA   the past's keys and values concatenated with the A new ones, then
                `scaled_dot_product_attention` with a mask letting each new token see the past
                and itself (what the Transformer did before; the concatenation copies the cache)
  one softmax   scores against the past and against its own key, one softmax over both, the
                two weighted sums added (transformer._sibling_attention: no copy of the cache)

The default shape is a DICP-DPT planning level on Darkroom (400 beams x 4 heads, 5 actions after an
80-token window), then Darkroom-Permuted's 200-token window. It prints the time per call of each, the
ratio, and the largest difference between their outputs (float rounding only). Usage:

    python benchmarks/bench_sibling_attention.py
    python benchmarks/bench_sibling_attention.py --beams 80 --past 160
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from timing import per_call_ms

from icrl_bench.agents.transformer import _sibling_attention


def masked_sdpa(q, past_k, past_v, k, v) -> torch.Tensor:
    T, P = q.shape[2], past_k.shape[2]
    mask = torch.cat([torch.ones(T, P, dtype=torch.bool), torch.eye(T, dtype=torch.bool)], dim=1)
    return F.scaled_dot_product_attention(q, torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2), attn_mask=mask)


def one_softmax(q, past_k, past_v, k, v) -> torch.Tensor:
    return _sibling_attention(q, past_k, past_v, k, v, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, default=400)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--actions", type=int, default=5)
    parser.add_argument("--past", type=int, nargs="+", default=[80, 200])
    parser.add_argument("--head-dim", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for past in args.past:
        B, H, A, D = args.beams, args.heads, args.actions, args.head_dim
        q, k, v = (torch.randn(B, H, A, D) for _ in range(3))
        past_k, past_v = torch.randn(B, H, past, D), torch.randn(B, H, past, D)
        diff = (masked_sdpa(q, past_k, past_v, k, v) - one_softmax(q, past_k, past_v, k, v)).abs().max().item()
        old = per_call_ms(masked_sdpa, q, past_k, past_v, k, v, repeats=args.repeats)
        new = per_call_ms(one_softmax, q, past_k, past_v, k, v, repeats=args.repeats)
        print(f"{B} beams x {H} heads, {A} siblings after {past} tokens, {torch.get_num_threads()} thread(s): "
              f"masked SDPA {old:.2f} ms, one softmax {new:.2f} ms, {old / new:.2f}x; largest difference {diff:.1e}")


if __name__ == "__main__":
    main()

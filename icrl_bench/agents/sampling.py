"""DICP's planning for continuous actions (Son et al. 2025, Sec. 4): sample candidates, keep the best predicted reward.

With continuous actions there is no list of actions to search, so DICP samples (official
metaworld/model/{ad,idt}.py `greedy_search`):

    candidates   the policy's mean, then `samples - 1` draws from its Gaussian   [E, K, action_dim]
    score        each candidate as an action-query token after the real context: the
                 world-model head's predicted reward, clipped to [0, reward_max]
    act          the candidate with the highest score (ties: the earliest, so the mean first)

Scoring is batched over envs and candidates. Cached, the context (up to the query state) is
already encoded by acting; the K action queries are K sibling tokens after it
(`Transformer.forward(..., siblings=True)`: each attends to the cache and to itself), so no context is encoded
again and its cache is not copied K times. The reference (`tokens=`) encodes every candidate's
whole sequence [context, query state, candidate] from scratch, as the official code does.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from icrl_bench.agents.transformer import KVCache, Transformer

# Official evaluate.py `--sample-size` default.
PAPER_SAMPLES = 10
# Official `evaluate_in_context(..., beam_start=50)`: plan only once the step within the episode is past it.
BEAM_START = 50


def candidate_actions(mean: torch.Tensor, std: torch.Tensor, samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The mean and `samples - 1` Gaussian draws per env: [E, A] each -> [E, samples, A] (mean first)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    E, A = mean.shape
    eps = torch.randn((E, samples - 1, A), generator=generator, device=mean.device, dtype=mean.dtype)
    return torch.cat([mean[:, None], mean[:, None] + std[:, None] * eps], dim=1)


@torch.inference_mode()
def predicted_rewards(
    transformer: Transformer,
    embed_action: nn.Module,
    reward_of: Callable[[torch.Tensor], torch.Tensor],
    candidates: torch.Tensor,
    cache: KVCache | None = None,
    tokens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Predicted reward [E, K] of each candidate action [E, K, A] after each env's context.

    Pass the context either as `cache` (the KV cache up to the query state; each candidate is a
    sibling token after it) or as `tokens` [E, T, C] (encoded from scratch per candidate: the
    reference). `reward_of` maps hidden states [..., C] to rewards [...].
    """
    E, K, _ = candidates.shape
    x = embed_action(candidates)  # [E, K, C]
    if cache is not None:
        h, _ = transformer(x, cache, siblings=True)  # [E, K, C]
    elif tokens is not None:
        sequences = torch.cat([tokens.repeat_interleave(K, dim=0), x.reshape(E * K, 1, -1)], dim=1)  # [E*K, T + 1, C]
        h = transformer(sequences)[0][:, -1].view(E, K, -1)
    else:
        raise ValueError("pass the context as a cache or as tokens")
    return reward_of(h)


def best_candidate(candidates: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """The candidate [E, A] of highest predicted reward [E, K] (the first of equals)."""
    return candidates[torch.arange(len(candidates), device=candidates.device), rewards.argmax(dim=-1)]

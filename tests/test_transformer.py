"""The causal Transformer: KV-cached decoding equals the full forward; the cache branches and prunes."""

from __future__ import annotations

import pytest
import torch

from icrl_bench.agents.transformer import KVCache, Transformer, TransformerConfig

TOL = 1e-5


@pytest.fixture
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(TransformerConfig(n_layer=3, n_head=2, n_embd=16, n_inner=32, dropout=0.1, attn_dropout=0.1)).eval()


def test_token_by_token_equals_full(model: Transformer) -> None:
    x = torch.randn(3, 20, 16)
    with torch.no_grad():
        full, _ = model(x)
        cache, outs = None, []
        for t in range(x.shape[1]):
            h, cache = model(x[:, t : t + 1], cache)
            outs.append(h)
    assert len(cache) == 20 and cache.next_pos == 20
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=TOL, rtol=0)


def test_chunked_prefill_equals_full(model: Transformer) -> None:
    x = torch.randn(2, 17, 16)
    with torch.no_grad():
        full, _ = model(x)
        h1, c1 = model(x[:, :5])
        h2, c2 = model(x[:, 5:12], c1)  # several new tokens after a cache: block-causal mask
        h3, _ = model(x[:, 12:], c2)
    torch.testing.assert_close(torch.cat([h1, h2, h3], 1), full, atol=TOL, rtol=0)


def test_forward_does_not_modify_the_cache(model: Transformer) -> None:
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        _, cache = model(x)
        before = cache.clone()
        model(torch.randn(2, 3, 16), cache)
    assert len(cache) == 6 and all(torch.equal(a, b) for a, b in zip(cache.k, before.k))


def test_branching_and_pruning(model: Transformer) -> None:
    """repeat_interleave / index_select give what separate full forwards give (beam search)."""
    context, branches = torch.randn(2, 8, 16), torch.randn(2 * 3, 1, 16)
    with torch.no_grad():
        _, cache = model(context)
        h, branched = model(branches, cache.repeat_interleave(3))  # [6, 1, C]
        full = torch.stack([model(torch.cat([context[i // 3], branches[i]], 0)[None])[0][0, -1] for i in range(6)])
        torch.testing.assert_close(h[:, -1], full, atol=TOL, rtol=0)
        keep = torch.tensor([4, 0])  # prune to two beams, reordered
        pruned = branched.index_select(keep)
        nxt = torch.randn(2, 1, 16)
        h2, _ = model(nxt, pruned)
        for j, i in enumerate(keep.tolist()):
            seq = torch.cat([context[i // 3], branches[i], nxt[j]], 0)[None]
            torch.testing.assert_close(h2[j, -1], model(seq)[0][0, -1], atol=TOL, rtol=0)


def test_cat_stacks_caches_as_one_batch(model: Transformer) -> None:
    """Caches encoded apart and stacked continue as the batch encoded at once (planning's kept prefixes)."""
    x, nxt = torch.randn(3, 7, 16), torch.randn(3, 1, 16)
    with torch.no_grad():
        _, whole = model(x)
        stacked = KVCache.cat([model(x[:1])[1], model(x[1:])[1]])
        torch.testing.assert_close(model(nxt, stacked)[0], model(nxt, whole)[0], atol=TOL, rtol=0)
        with pytest.raises(ValueError, match="one length"):
            KVCache.cat([whole, model(x[:, :6])[1]])


def test_truncate_undoes_speculative_tokens(model: Transformer) -> None:
    x, y = torch.randn(1, 7, 16), torch.randn(1, 2, 16)
    with torch.no_grad():
        _, cache = model(x)
        _, longer = model(torch.randn(1, 3, 16), cache)
        back = longer.truncate(7)
        torch.testing.assert_close(model(y, back)[0], model(y, cache)[0], atol=0, rtol=0)
    assert back.next_pos == 7


def test_rotary_positions_are_relative(model: Transformer) -> None:
    """The same tokens at absolute positions 1000.. give the same outputs as at 0.. (a sliding window)."""
    x = torch.randn(2, 10, 16)
    with torch.no_grad():
        at_zero, _ = model(x)
        late, _ = model(x, KVCache(next_pos=1000))
    torch.testing.assert_close(late, at_zero, atol=1e-4, rtol=0)


def test_dropout_only_in_training(model: Transformer) -> None:
    x = torch.randn(2, 5, 16)
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="heads"):
        TransformerConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="dropout"):
        TransformerConfig(dropout=1.5)

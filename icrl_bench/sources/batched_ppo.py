"""Batched PPO: one stable-baselines3-style PPO learner per task, all tasks trained at once.

Why: SB3 spends almost all its time on Python overhead around tiny networks (a 64-64 MLP on
a batch of 50), one task per core. Here every task keeps its own weights and Adam state,
but the weights of all T tasks are stacked ([T, ...]) so that each forward pass, backward
pass and optimizer step is a handful of batched matrix multiplies (`torch.baddbmm`) over
all tasks, and all tasks x streams step one batched grid world. The algorithm is SB3's PPO
(`ppo.py`, `on_policy_algorithm.py`, `policies.py`, `buffers.py`) with a discrete action
space and `MlpPolicy`:

- separate policy and value MLPs, 2 -> 64 -> 64 (tanh), heads 5 and 1, SB3's orthogonal
  init (gain sqrt(2) hidden, 0.01 policy head, 1.0 value head, zero biases); with the same
  seed, a task's initial weights equal SB3's (the layers are created and initialised in
  SB3's order from a generator seeded like `set_random_seed`);
- rollouts of `n_steps` per stream, GAE(gamma, lambda) with SB3's episode-start bookkeeping
  and its time-limit bootstrap (`reward += gamma * V(terminal obs)` where an episode was
  truncated, not terminated);
- `n_epochs` passes over the shuffled rollout (`n_steps * n_streams` samples) in minibatches
  of `batch_size` (the last one partial), advantages normalised per minibatch, clipped
  surrogate, value MSE, entropy bonus, gradient-norm clip (per task), Adam (eps 1e-5).

The backward pass of the two MLPs is written by hand: it writes every gradient straight into
one flat buffer that a single fused Adam step then updates, and skips autograd's graph
bookkeeping on each of the ~40K tiny steps of a run; tests check it against autograd on a
plain per-task loop of `nn.Module`s. The policy and value hidden layers of all tasks are
stacked in one batch axis (2T), so each hidden layer is one matmul for both networks.

Randomness is counter-based: action sampling and minibatch shuffles draw from a hash of
(task seed, purpose, rollout, step or epoch, index), so a task's history depends only on its
seed, never on which tasks share its batch (on CPU; tested; on CUDA, cuBLAS may pick other
kernels for other batch sizes, so keep the builder's job boundaries fixed), and never on the
global RNG. Bit-equality with SB3's random streams is not a goal; equality of the learning
is, and `benchmarks/bench_source_fidelity.py` shows it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from icrl_bench.devices import cpu_threads, resolve_device
from icrl_bench.envs import get_family
from icrl_bench.errors import IcrlBenchError
from icrl_bench.sources import ProgressFn
from icrl_bench.sources.sb3_ppo import PPOConfig

N_ACTIONS = 5  # the grid worlds' Discrete(5)
OBS_DIM = 2  # an (x, y) cell, fed as floats (SB3's preprocessing of a Box without normalisation)
HIDDEN = 64  # SB3's MlpPolicy default: net_arch pi=[64, 64], vf=[64, 64], tanh
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-5  # SB3's PPO passes eps=1e-5 to Adam

# ----------------------------------------------------------------------------------------
# Stacked parameters. The hidden layers of all 2T MLPs (T policy nets, then T value nets)
# are stacked along one batch axis, so each hidden layer is one batched matmul for both
# networks of every task; the heads are stacked per task. Everything lives in one flat
# buffer, block by block ([2T, ...] or [T, ...], each block contiguous), so Adam is one
# fused op over the whole buffer and every gradient is written straight into its block.
# Hidden weights are [in, out] (x @ w); head weights are nn.Linear's [out, in] because the
# heads produce their outputs transposed, [T, out, M] (see `mlp_forward`). The first layer
# sees [x, y, 1], so its bias is the last row of w1: no broadcast copy, no bias reduction.
# ----------------------------------------------------------------------------------------

# name -> (shape of one block entry, entries per task: 2 = policy and value net, 1 = one net)
LAYOUT: dict[str, tuple[tuple[int, ...], int]] = {
    "w1": ((OBS_DIM + 1, HIDDEN), 2),  # rows: weight of x, weight of y, bias
    "w2": ((HIDDEN, HIDDEN), 2),
    "b2": ((1, HIDDEN), 2),
    "pi_w3": ((N_ACTIONS, HIDDEN), 1),
    "pi_b3": ((N_ACTIONS, 1), 1),
    "vf_w3": ((1, HIDDEN), 1),
    "vf_b3": ((1, 1), 1),
}
N_PARAMS = sum(math.prod(shape) * k for shape, k in LAYOUT.values())  # per task: 9,094


def views(flat: torch.Tensor, n_tasks: int) -> dict[str, torch.Tensor]:
    """Named contiguous blocks [k*T, *shape] of a flat parameter (or gradient) buffer [T * P]."""
    out, start = {}, 0
    for name, (shape, k) in LAYOUT.items():
        size = math.prod(shape) * k * n_tasks
        out[name] = flat[start : start + size].view(k * n_tasks, *shape)
        start += size
    return out


def sb3_modules(seed: int) -> dict[str, torch.nn.Linear]:
    """One task's six layers, created and initialised exactly as SB3's MlpPolicy does.

    SB3 seeds torch (`set_random_seed`), builds the layers (policy net, value net, action
    head, value head: nn.Linear's default init draws from the RNG), then re-initialises them
    orthogonally in the same order. We replay that under a forked RNG, so a task's initial
    weights depend on its seed alone and equal SB3's.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = {
            "pi1": torch.nn.Linear(OBS_DIM, HIDDEN),
            "pi2": torch.nn.Linear(HIDDEN, HIDDEN),
            "vf1": torch.nn.Linear(OBS_DIM, HIDDEN),
            "vf2": torch.nn.Linear(HIDDEN, HIDDEN),
            "pi3": torch.nn.Linear(HIDDEN, N_ACTIONS),
            "vf3": torch.nn.Linear(HIDDEN, 1),
        }
        gains = {
            "pi1": math.sqrt(2),
            "pi2": math.sqrt(2),
            "vf1": math.sqrt(2),
            "vf2": math.sqrt(2),
            "pi3": 0.01,
            "vf3": 1.0,
        }
        with torch.no_grad():
            for name, layer in layers.items():  # SB3's order: mlp_extractor, action_net, value_net
                torch.nn.init.orthogonal_(layer.weight, gain=gains[name])
                layer.bias.zero_()
    return layers


def stack_modules(tasks: list[dict[str, torch.nn.Linear]], device: torch.device) -> torch.Tensor:
    """The flat buffer [T * P] holding each task's six layers (as `sb3_modules` names them)."""
    n = len(tasks)
    flat = torch.zeros(n * N_PARAMS)
    p = views(flat, n)
    with torch.no_grad():
        for i, layers in enumerate(tasks):
            for j, net in enumerate(("pi", "vf")):  # rows [0, T): policy nets; [T, 2T): value nets
                p["w1"][j * n + i, :OBS_DIM] = layers[f"{net}1"].weight.T
                p["w1"][j * n + i, OBS_DIM] = layers[f"{net}1"].bias
                p["w2"][j * n + i] = layers[f"{net}2"].weight.T
                p["b2"][j * n + i, 0] = layers[f"{net}2"].bias
                p[f"{net}_w3"][i] = layers[f"{net}3"].weight
                p[f"{net}_b3"][i, :, 0] = layers[f"{net}3"].bias
    return flat.to(device)


def unstack_modules(flat: torch.Tensor, n_tasks: int, task: int) -> dict[str, torch.nn.Linear]:
    """Task `task`'s six layers as nn.Linear modules (the inverse of `stack_modules`)."""
    p = views(flat.detach().cpu(), n_tasks)
    sizes = {
        "pi1": (OBS_DIM, HIDDEN),
        "pi2": (HIDDEN, HIDDEN),
        "vf1": (OBS_DIM, HIDDEN),
        "vf2": (HIDDEN, HIDDEN),
        "pi3": (HIDDEN, N_ACTIONS),
        "vf3": (HIDDEN, 1),
    }
    layers = {name: torch.nn.Linear(*size) for name, size in sizes.items()}
    with torch.no_grad():
        for j, net in enumerate(("pi", "vf")):
            layers[f"{net}1"].weight.copy_(p["w1"][j * n_tasks + task, :OBS_DIM].T)
            layers[f"{net}1"].bias.copy_(p["w1"][j * n_tasks + task, OBS_DIM])
            layers[f"{net}2"].weight.copy_(p["w2"][j * n_tasks + task].T)
            layers[f"{net}2"].bias.copy_(p["b2"][j * n_tasks + task, 0])
            layers[f"{net}3"].weight.copy_(p[f"{net}_w3"][task])
            layers[f"{net}3"].bias.copy_(p[f"{net}_b3"][task, :, 0])
    return layers


# ----------------------------------------------------------------------------------------
# The two MLPs of every task, forward and hand-written backward.
# ----------------------------------------------------------------------------------------


def mlp_forward(
    p: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """Policy logits [T, 5, M] and values [T, 1, M] of every task's nets on its inputs x [T, M, 2].

    Outputs are transposed (actions on axis 1) because softmax over a short middle axis is
    ~10x faster on CPU than over a last axis of 5. Also returns what `mlp_backward` needs.
    """
    n = x.shape[0]
    x1 = torch.cat([x, x.new_ones(*x.shape[:-1], 1)], -1)  # [T, M, 3]: (x, y, 1)
    x2 = torch.cat([x1, x1])  # [2T, M, 3]: the same inputs for the policy and the value net
    h1 = torch.bmm(x2, p["w1"]).tanh_()  # [2T, M, 64]
    h2 = torch.baddbmm(p["b2"], h1, p["w2"]).tanh_()  # [2T, M, 64]
    h2_t = h2.transpose(1, 2)  # [2T, 64, M]
    logits = torch.baddbmm(p["pi_b3"], p["pi_w3"], h2_t[:n])  # [T, 5, M]
    values = torch.baddbmm(p["vf_b3"], p["vf_w3"], h2_t[n:])  # [T, 1, M]
    return logits, values, (x2, h1, h2)


def mlp_backward(
    p: dict[str, torch.Tensor],
    g: dict[str, torch.Tensor],
    g_logits: torch.Tensor,
    g_values: torch.Tensor,
    cache: tuple[torch.Tensor, ...],
) -> None:
    """Write d loss / d parameters into the gradient blocks `g`, given d loss / d outputs.

    Args:
        g_logits: [T, 5, M]; g_values: [T, 1, M] (the layouts `mlp_forward` returns).
    """
    x2, h1, h2 = cache
    n = g_logits.shape[0]
    torch.bmm(g_logits, h2[:n], out=g["pi_w3"])  # [T, 5, 64]
    torch.sum(g_logits, 2, keepdim=True, out=g["pi_b3"])
    torch.bmm(g_values, h2[n:], out=g["vf_w3"])  # [T, 1, 64]
    torch.sum(g_values, 2, keepdim=True, out=g["vf_b3"])
    g_h2 = torch.empty_like(h2)  # [2T, M, 64]
    torch.bmm(g_logits.transpose(1, 2), p["pi_w3"], out=g_h2[:n])
    torch.bmm(g_values.transpose(1, 2), p["vf_w3"], out=g_h2[n:])
    g_z2 = torch.ops.aten.tanh_backward(g_h2, h2)  # g * (1 - tanh^2), one fused op
    torch.bmm(h1.transpose(1, 2), g_z2, out=g["w2"])  # [2T, 64, 64]
    torch.sum(g_z2, 1, keepdim=True, out=g["b2"])
    g_z1 = torch.ops.aten.tanh_backward(torch.bmm(g_z2, p["w2"].transpose(1, 2)), h1)  # [2T, M, 64]
    torch.bmm(x2.transpose(1, 2), g_z1, out=g["w1"])  # [2T, 3, 64]: weights and bias


# ----------------------------------------------------------------------------------------
# PPO's loss (SB3 ppo.py `train`) with its gradient with respect to the network outputs.
# ----------------------------------------------------------------------------------------


@dataclass
class LossTerms:
    """Per-task loss terms [T] of one minibatch, as SB3 logs them, and the output gradients."""

    policy_loss: torch.Tensor  # [T] -mean(min(A r, A clip(r)))
    value_loss: torch.Tensor  # [T] mean((R - V)^2)
    entropy_loss: torch.Tensor  # [T] -mean(entropy)
    loss: torch.Tensor  # [T] policy_loss + ent_coef * entropy_loss + vf_coef * value_loss
    g_logits: torch.Tensor  # [T, 5, M] d loss / d logits
    g_values: torch.Tensor  # [T, 1, M] d loss / d values


def ppo_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    clip_range: float,
    ent_coef: float,
    vf_coef: float,
) -> LossTerms:
    """SB3's PPO loss of every task's minibatch, and its gradient w.r.t. the network outputs.

    Args:
        logits: [T, 5, M]; values: [T, 1, M]; actions: [T, M] long; old_log_prob,
            advantages, returns: [T, M] from the rollout.
    """
    m = logits.shape[2]
    log_probs = torch.log_softmax(logits, dim=1)  # [T, 5, M]
    probs = log_probs.exp()
    log_prob = log_probs.gather(1, actions.unsqueeze(1)).squeeze(1)  # [T, M]
    if m > 1:  # SB3 normalises only minibatches of more than one sample (unbiased std)
        advantages = (advantages - advantages.mean(1, keepdim=True)) / (advantages.std(1, keepdim=True) + 1e-8)
    ratio = torch.exp(log_prob - old_log_prob)
    clipped = torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    surrogate_1, surrogate_2 = advantages * ratio, advantages * clipped
    policy_loss = -torch.min(surrogate_1, surrogate_2).mean(1)
    values = values.squeeze(1)  # [T, M]
    value_loss = (returns - values).square().mean(1)
    entropy = -(probs * log_probs).sum(1)  # [T, M]
    entropy_loss = -entropy.mean(1)
    loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss

    # d(-min(s1, s2))/d ratio: the unclipped branch when it is the smaller one, or when the
    # ratio is inside the clip range (then s1 == s2 and autograd splits the gradient in
    # half between two branches that both have slope A).
    inside = (ratio >= 1 - clip_range) & (ratio <= 1 + clip_range)
    g_ratio = -advantages * (inside | (surrogate_1 < surrogate_2)) / m  # [T, M]
    g_log_prob = (g_ratio * ratio).unsqueeze(1)  # d ratio / d log_prob = ratio; [T, 1, M]
    # d log_softmax(l)[a] / d l = onehot(a) - softmax(l)
    g_logits = -probs * g_log_prob  # [T, 5, M]
    g_logits.scatter_add_(1, actions.unsqueeze(1), g_log_prob)
    if ent_coef:
        # d(-entropy)/d l_j = p_j (log p_j + entropy)
        g_logits += (ent_coef / m) * probs * (log_probs + entropy.unsqueeze(1))
    g_values = (vf_coef * 2 / m) * (values - returns)  # [T, M]
    return LossTerms(policy_loss, value_loss, entropy_loss, loss, g_logits, g_values.unsqueeze(1))


def clip_grad_norm(g: dict[str, torch.Tensor], n_tasks: int, max_norm: float) -> torch.Tensor:
    """Scale each task's whole gradient in place to norm <= max_norm; returns the norms [T].

    Per task, as `torch.nn.utils.clip_grad_norm_` does over one learner's parameters
    (both networks: SB3 clips `policy.parameters()`).
    """
    # Norms of contiguous rows [k * T, n] (k = 2 for blocks holding both networks; a
    # reduction along the contiguous axis is ~4x faster than over axes (0, 2) of [k, T, n]).
    blocks = [block.view(-1, block[0].numel()) for block in g.values()]
    row_norms = [torch.linalg.vector_norm(b, dim=1).view(-1, n_tasks) for b in blocks]  # [k, T] each
    norm = torch.cat(row_norms).square().sum(0).sqrt()  # [T]
    scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)
    for block in blocks:
        block.view(-1, n_tasks, block.shape[1]).mul_(scale.view(1, n_tasks, 1))
    return norm


# ----------------------------------------------------------------------------------------
# GAE (SB3 buffers.py `compute_returns_and_advantage`), time on the last axis.
# ----------------------------------------------------------------------------------------


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    episode_starts: torch.Tensor,
    last_values: torch.Tensor,
    last_dones: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns [..., N] of a rollout [..., N] (N steps, time last).

    `episode_starts[..., t]` says obs t began an episode (so step t-1 ended one);
    `last_dones` whether the rollout's last step ended one, `last_values` V(obs after it).
    """
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(last_values)
    n = rewards.shape[-1]
    for t in reversed(range(n)):
        if t == n - 1:
            next_non_terminal = 1.0 - last_dones.float()
            next_values = last_values
        else:
            next_non_terminal = 1.0 - episode_starts[..., t + 1]
            next_values = values[..., t + 1]
        delta = rewards[..., t] + gamma * next_values * next_non_terminal - values[..., t]
        last_gae = delta + gamma * gae_lambda * next_non_terminal * last_gae
        advantages[..., t] = last_gae
    return advantages, advantages + values


# ----------------------------------------------------------------------------------------
# Counter-based random numbers: a task's draws depend on its seed and a counter only.
# ----------------------------------------------------------------------------------------

_MASK32 = 0xFFFFFFFF
_PURPOSE_ACTION, _PURPOSE_SHUFFLE = 1, 2


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xorshift-multiply); int64 arithmetic that never overflows."""
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    x = ((x >> 16) ^ x) * 0x45D9F3B & _MASK32
    return (x >> 16) ^ x


def hash_words(*words: torch.Tensor | int) -> torch.Tensor:
    """Hash of a tuple of 32-bit words (tensors broadcast), as an int64 tensor in [0, 2^32)."""
    h = torch.as_tensor(0x9E3779B9)
    for word in words:
        h = _mix32((h + 0x9E3779B9 + (torch.as_tensor(word) & _MASK32)) & _MASK32)
    return h


def task_keys(seeds: list[int], device: torch.device) -> torch.Tensor:
    """One 32-bit key [T] per task seed (seeds of any size)."""
    seeds_t = torch.tensor(
        [[s & _MASK32, (s >> 32) & _MASK32] for s in (int(s) for s in seeds)], dtype=torch.long, device=device
    )
    return hash_words(seeds_t[:, 0], seeds_t[:, 1])


def uniform(h: torch.Tensor) -> torch.Tensor:
    """Hashes -> float32 in [0, 1) with 24 random bits (exact in float32)."""
    return (h >> 8).float() * (1.0 / (1 << 24))


def shuffled(keys: torch.Tensor, rollout: int, epoch: int, size: int) -> torch.Tensor:
    """One random permutation [T, size] of range(size) per task (SB3: np.random.permutation)."""
    index = torch.arange(size, device=keys.device)
    sort_keys = hash_words(keys.unsqueeze(1), _PURPOSE_SHUFFLE, rollout, epoch, index)  # [T, size]
    return torch.argsort(sort_keys, dim=1, stable=True)  # ties (rare) broken by index


def sample_actions(log_probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Categorical samples [T, M] by inverse CDF from log-probabilities [T, 5, M] and uniforms [T, M]."""
    cdf = log_probs.exp().cumsum(1)  # [T, 5, M]
    return (cdf[:, :-1] <= u.unsqueeze(1)).sum(1)  # at most N_ACTIONS - 1 even if cdf[:, -1] < 1


# ----------------------------------------------------------------------------------------
# The learner: rollouts, GAE, epochs of minibatch updates; all tasks at once.
# ----------------------------------------------------------------------------------------


@dataclass
class RolloutBuffer:
    """One rollout of every learner, [T, S, n_steps, ...] per stream in time order, as SB3 flattens it:
    what PPO learns from (rewards with the time-limit bootstrap) and what the history records."""

    obs: torch.Tensor
    action: torch.Tensor
    reward: torch.Tensor  # with the time-limit bootstrap
    start: torch.Tensor
    value: torch.Tensor
    log_prob: torch.Tensor
    next_obs: torch.Tensor  # recorded
    env_reward: torch.Tensor  # recorded: the env's reward
    done: torch.Tensor  # recorded

    @classmethod
    def zeros(cls, n_tasks: int, n_streams: int, n_steps: int, dev: torch.device) -> RolloutBuffer:
        shape = (n_tasks, n_streams, n_steps)
        return cls(
            obs=torch.zeros(*shape, OBS_DIM, device=dev), action=torch.zeros(*shape, dtype=torch.long, device=dev),
            reward=torch.zeros(*shape, device=dev), start=torch.zeros(*shape, device=dev), value=torch.zeros(*shape, device=dev),
            log_prob=torch.zeros(*shape, device=dev), next_obs=torch.zeros(*shape, 2, dtype=torch.long, device=dev),
            env_reward=torch.zeros(*shape, device=dev), done=torch.zeros(*shape, dtype=torch.bool, device=dev),
        )


@torch.no_grad()  # gradients are computed by hand; autograd would only cost time
def train_tasks(
    family: str,
    params: np.ndarray,
    seeds: list[int],
    config: PPOConfig,
    device: str | torch.device = "cpu",
    progress: ProgressFn | None = None,
) -> dict[str, np.ndarray]:
    """Run one PPO learner per task (rows of params [T, k]) and return all histories stacked.

    Returns arrays [T, S, N, ...] (S streams, N steps per stream): obs and next_obs uint8
    [.., 2], action uint8, reward float32, done bool. `progress` gets the env steps of
    each rollout (all tasks together).
    """
    dev = torch.device(resolve_device(device))
    cfg = config
    n_tasks, n_streams, n_steps = len(params), cfg.n_streams, cfg.n_steps
    n_rollouts = cfg.total_timesteps // (n_steps * n_streams)
    if len(seeds) != n_tasks:
        raise ValueError(f"{n_tasks} tasks but {len(seeds)} seeds")

    # Env rows are task-major: row = task * S + stream.
    env = get_family(family).batched(np.repeat(np.asarray(params), n_streams, axis=0), dev)
    flat = stack_modules([sb3_modules(int(s)) for s in seeds], dev)  # [T * P]
    p = views(flat, n_tasks)
    flat.grad = torch.zeros_like(flat)  # the optimizer reads it; mlp_backward writes into its blocks
    g = views(flat.grad, n_tasks)
    # One Adam over the stacked buffer is T independent Adams: its update is elementwise and
    # every task takes the same number of steps. Fused: one pass over memory per step.
    optimizer = torch.optim.Adam([flat], lr=cfg.learning_rate, betas=ADAM_BETAS, eps=ADAM_EPS, fused=True)
    keys = task_keys(list(seeds), dev)  # [T]

    total_steps = n_rollouts * n_steps
    history = {
        "obs": np.empty((n_tasks, n_streams, total_steps, 2), np.uint8),
        "action": np.empty((n_tasks, n_streams, total_steps), np.uint8),
        "reward": np.empty((n_tasks, n_streams, total_steps), np.float32),
        "next_obs": np.empty((n_tasks, n_streams, total_steps, 2), np.uint8),
        "done": np.empty((n_tasks, n_streams, total_steps), bool),
    }
    buf = RolloutBuffer.zeros(n_tasks, n_streams, n_steps, dev)
    obs = env.reset().view(n_tasks, n_streams, 2)  # [T, S, 2] long
    episode_start = torch.ones(n_tasks, n_streams, device=dev)  # SB3's _last_episode_starts
    for rollout in range(n_rollouts):
        obs, episode_start = _collect_rollout(env, p, keys, rollout, buf, obs, episode_start, cfg)
        _, last_values, _ = mlp_forward(p, obs.float())
        advantages, returns = gae(buf.reward, buf.value, buf.start, last_values.squeeze(1), episode_start, cfg.gamma, cfg.gae_lambda)
        steps = slice(rollout * n_steps, (rollout + 1) * n_steps)
        history["obs"][:, :, steps] = buf.obs.to(torch.uint8).cpu().numpy()
        history["action"][:, :, steps] = buf.action.to(torch.uint8).cpu().numpy()
        history["reward"][:, :, steps] = buf.env_reward.cpu().numpy()
        history["next_obs"][:, :, steps] = buf.next_obs.to(torch.uint8).cpu().numpy()
        history["done"][:, :, steps] = buf.done.cpu().numpy()
        _update(p, g, optimizer, keys, rollout, buf, advantages, returns, cfg)
        if progress is not None:
            progress(n_tasks * n_steps * n_streams)
    return history


def _collect_rollout(env, p: dict, keys: torch.Tensor, rollout: int, buf: RolloutBuffer, obs: torch.Tensor,
                     episode_start: torch.Tensor, cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """n_steps per stream with the current policies into `buf` (SB3 collect_rollouts); the last obs and episode starts."""
    n_tasks, n_streams = obs.shape[:2]
    stream_index = torch.arange(n_streams, device=obs.device)
    for t in range(cfg.n_steps):
        x = obs.float()
        logits, values, _ = mlp_forward(p, x)  # [T, 5, S], [T, 1, S]
        log_probs = torch.log_softmax(logits, 1)
        u = uniform(hash_words(keys.unsqueeze(1), _PURPOSE_ACTION, rollout, t, stream_index))  # [T, S]
        action = sample_actions(log_probs, u)  # [T, S]
        step = env.step(action.reshape(-1))
        reward = step.reward.view(n_tasks, n_streams)
        done = step.done.view(n_tasks, n_streams)
        next_obs = step.next_obs.view(n_tasks, n_streams, 2)
        bootstrap_reward = reward
        truncated = getattr(step, "truncated", None)  # our grid worlds only terminate
        if truncated is not None and bool(truncated.any()):
            truncated = truncated.view(n_tasks, n_streams) & done
            _, terminal_value, _ = mlp_forward(p, next_obs.float())
            bootstrap_reward = reward + cfg.gamma * terminal_value.squeeze(1) * truncated
        buf.obs[:, :, t] = x
        buf.action[:, :, t] = action
        buf.reward[:, :, t] = bootstrap_reward
        buf.start[:, :, t] = episode_start
        buf.value[:, :, t] = values.squeeze(1)
        buf.log_prob[:, :, t] = log_probs.gather(1, action.unsqueeze(1)).squeeze(1)
        buf.next_obs[:, :, t] = next_obs
        buf.env_reward[:, :, t] = reward
        buf.done[:, :, t] = done
        obs = step.obs.view(n_tasks, n_streams, 2)
        episode_start = done.float()
    return obs, episode_start


def _update(p: dict, g: dict, optimizer: torch.optim.Optimizer, keys: torch.Tensor, rollout: int, buf: RolloutBuffer,
            advantages: torch.Tensor, returns: torch.Tensor, cfg: PPOConfig) -> None:
    """n_epochs of shuffled minibatch updates of every learner (SB3 PPO.train)."""
    n_tasks, n_streams, n_steps = buf.action.shape
    rollout_size = n_streams * n_steps
    task_offset = (torch.arange(n_tasks, device=buf.obs.device) * rollout_size).unsqueeze(1)  # [T, 1]: per-task sample rows -> flat rows
    # One row per sample: [obs x, obs y, action, old log-prob, advantage, return].
    samples = torch.cat(
        [buf.obs, buf.action.unsqueeze(-1).float(), buf.log_prob.unsqueeze(-1), advantages.unsqueeze(-1), returns.unsqueeze(-1)],
        dim=-1,
    ).view(n_tasks * rollout_size, 6)  # row = task * S * n_steps + stream * n_steps + step
    for epoch in range(cfg.n_epochs):
        order = shuffled(keys, rollout, epoch, rollout_size) + task_offset  # [T, S * n_steps]
        for start in range(0, rollout_size, cfg.batch_size):
            index = order[:, start : start + cfg.batch_size]  # [T, M]
            batch = samples.index_select(0, index.reshape(-1)).view(n_tasks, -1, 6)  # [T, M, 6]
            logits, values, cache = mlp_forward(p, batch[..., :2])
            terms = ppo_loss(
                logits, values, batch[..., 2].long(), batch[..., 3], batch[..., 4], batch[..., 5],
                cfg.clip_range, cfg.ent_coef, cfg.vf_coef,
            )  # fmt: skip
            mlp_backward(p, g, terms.g_logits, terms.g_values, cache)
            clip_grad_norm(g, n_tasks, cfg.max_grad_norm)
            optimizer.step()


# On a CPU, a batch of learners runs fastest when one minibatch step's hidden activations
# ([2C, batch_size, 64] float32) stay in a core's L2 cache: measured on the 2-core dev box
# (2 MiB L2 per core), 81 Darkroom learners took ~1.5x longer per step as one batch than as
# two of ~40. So on CPU a job trains its tasks in chunks under this budget, one chunk after
# another (a task's history does not depend on its batch-mates, so the data are the same).
CPU_ACTIVATION_BUDGET = 1 << 20  # bytes


def cpu_chunks(n_tasks: int, batch_size: int) -> list[slice]:
    """Balanced consecutive chunks of tasks whose activations fit `CPU_ACTIVATION_BUDGET`."""
    per_task = 2 * batch_size * HIDDEN * 4  # policy and value activations of one layer
    most = max(1, CPU_ACTIVATION_BUDGET // per_task)
    n_chunks = -(-n_tasks // most)
    bounds = np.linspace(0, n_tasks, n_chunks + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


class BatchedPPOSource:
    """The `batched-ppo` source: the tasks of a job trained together in one process."""

    name = "batched-ppo"
    config_cls = PPOConfig

    @property
    def tasks_per_job(self) -> int:
        """Learners per builder job.

        With CUDA, 256: a GPU needs big batches (Dark Key-to-Door in 26 jobs, each holding
        ~180 MB of uint8 histories). On CPU, 41: a job runs on one core, so the builder's
        workers (one per core) get several jobs (Darkroom: 41 + 40); a task's data do not
        depend on its job (tested), so either size builds the same dataset.
        """
        return 256 if torch.cuda.is_available() else 41

    def run(
        self,
        family: str,
        tasks: list[int],
        seeds: list[int],
        config: Any,
        device: str = "cpu",
        progress: ProgressFn | None = None,
    ) -> list[dict[str, np.ndarray]]:
        spec = get_family(family)
        if spec.kind != "discrete":
            raise IcrlBenchError(f"batched-ppo runs the grid worlds only; build {family} with --source sb3-ppo or sb3-sac.")
        params, seeds = spec.task_params()[list(tasks)], list(seeds)
        dev = torch.device(resolve_device(device))
        chunks = cpu_chunks(len(params), config.batch_size) if dev.type == "cpu" else [slice(0, len(params))]
        histories = []
        with cpu_threads(CPU_THREADS if dev.type == "cpu" else None):
            for chunk in chunks:
                stacked = train_tasks(family, params[chunk], seeds[chunk], config, dev, progress)
                histories += [{name: values[i] for name, values in stacked.items()} for i in range(len(stacked["action"]))]
        return histories


CPU_THREADS = 1
"""Torch threads of every CPU job, in a worker or in the main process alike.

The thread count is part of the data: torch's CPU kernels split reductions across threads, so
the same task trained with 2 threads and with 1 gives different float bits and, a few updates
later, different actions (measured: another content hash). One thread is also the fastest way
to run these tiny matmuls (threads wait on each other), and the builder runs one job per core.
"""


SOURCE = BatchedPPOSource()

"""Grid cells and discrete actions vs. continuous vectors: all the networks do differently on the two.

AD and IDT are the same Transformers with the same token layout on both kinds of env; the official
gridworld/ and metaworld/ model code differ only in how inputs are embedded and what the heads
predict. A network asks its config's space (`config.space()`) for those parts:

                   discrete (grid worlds)                 continuous (Meta-World)
    state input    cell index -> nn.Embedding             obs vector -> nn.Linear
    action input   index -> nn.Embedding (or one-hot)     action vector -> nn.Linear
    reward input   class 0..n-1 -> nn.Embedding           scalar -> nn.Linear(1, .)
    action head    logits, cross-entropy                  Gaussian mean and log-variance, Gaussian NLL
                                                          (`learn_var`; else the mean alone, MSE)
    reward head    class logits, cross-entropy            a scalar clipped to [0, reward_max], MSE
    next state     cell logits, cross-entropy             obs vector, MSE (only with `learn_transition`)

The discrete parts are plain `nn.Embedding` / `nn.Linear` modules, so the grid agents' parameter
names, and their saved checkpoints, are what they were before continuous actions existed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from icrl_bench.agents.tokens import ContinuousModelConfig, GridModelConfig

Metrics = dict[str, torch.Tensor]


def state_index(obs: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Cell (x, y) [..., 2] -> index x * grid_size + y [...] (the official `map_dark_states`)."""
    obs = obs.long()
    return obs[..., 0] * grid_size + obs[..., 1]


def state_from_index(index: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Inverse of `state_index`: [...] -> [..., 2]."""
    return torch.stack((index // grid_size, index % grid_size), dim=-1)


class ScalarLinear(nn.Linear):
    """nn.Linear(1, n) applied to a scalar per position: [...] -> [..., n] (the official `embed_reward`)."""

    def __init__(self, out_features: int):
        super().__init__(1, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.dtype).unsqueeze(-1))


class GridSpace:
    """Cells and action indices of the grid worlds; heads are classifiers."""

    kind = "discrete"

    def __init__(self, config: GridModelConfig):
        self.grid_size = config.grid_size
        self.num_actions = config.num_actions
        self.n_reward_classes = config.n_reward_classes
        self.label_smoothing = config.label_smoothing
        self.n_cells = config.grid_size**2
        self.dim_state = config.dim_state
        self.action_features_dim = config.num_actions  # one-hot, inside a transition token
        self.action_shape: tuple[int, ...] = ()  # one index per step
        self.action_dtype = torch.long
        self.learns_next_state = True

    # -- network inputs: raw batch or env values -> what the embeddings take
    def state(self, obs: torch.Tensor) -> torch.Tensor:
        """[..., 2] cells -> [...] indices."""
        return state_index(obs, self.grid_size)

    def action(self, action: torch.Tensor) -> torch.Tensor:
        return action.long()

    def reward(self, reward: torch.Tensor) -> torch.Tensor:
        """Reward classes (rewards above the last class fall in it, as in the official code)."""
        return reward.long().clamp(0, self.n_reward_classes - 1)

    def action_features(self, action: torch.Tensor) -> torch.Tensor:
        return F.one_hot(action.long(), self.num_actions)

    # -- embeddings and heads
    def state_embedding(self, n_embd: int) -> nn.Module:
        return nn.Embedding(self.n_cells, n_embd)

    def action_embedding(self, n_embd: int) -> nn.Module:
        return nn.Embedding(self.num_actions, n_embd)

    def reward_embedding(self, n_embd: int) -> nn.Module:
        return nn.Embedding(self.n_reward_classes, n_embd)

    def action_head(self, n_embd: int) -> nn.Linear:
        return nn.Linear(n_embd, self.num_actions)

    def reward_head(self, n_embd: int) -> nn.Linear:
        return nn.Linear(n_embd, self.n_reward_classes)

    def next_state_head(self, n_embd: int) -> nn.Linear:
        return nn.Linear(n_embd, self.n_cells)

    # -- losses on head outputs [..., k] against encoded targets [...]
    def _classification(self, name: str, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), label_smoothing=self.label_smoothing)
        return loss, {f"loss_{name}": loss.detach(), f"acc_{name}": (logits.argmax(-1) == target).float().mean()}

    def action_loss(self, out: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        return self._classification("action", out, action)

    def reward_loss(self, out: torch.Tensor, reward: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        return self._classification("reward", out, reward)

    def next_state_loss(self, out: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        return self._classification("next_state", out, state)


class ContinuousSpace:
    """Observation and action vectors of continuous control (Meta-World); a Gaussian policy, regression heads."""

    kind = "continuous"

    def __init__(self, config: ContinuousModelConfig):
        self.obs_dim = config.obs_dim
        self.action_dim = config.action_dim
        self.learn_var = config.learn_var
        self.reward_max = config.reward_max
        self.dim_state = config.obs_dim
        self.action_features_dim = config.action_dim
        self.action_shape: tuple[int, ...] = (config.action_dim,)
        self.action_dtype = torch.float32
        self.learns_next_state = config.learn_transition

    def state(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.float()

    def action(self, action: torch.Tensor) -> torch.Tensor:
        return action.float()

    def reward(self, reward: torch.Tensor) -> torch.Tensor:
        return reward.float()

    def action_features(self, action: torch.Tensor) -> torch.Tensor:
        return action.float()

    def state_embedding(self, n_embd: int) -> nn.Module:
        return nn.Linear(self.obs_dim, n_embd)

    def action_embedding(self, n_embd: int) -> nn.Module:
        return nn.Linear(self.action_dim, n_embd)

    def reward_embedding(self, n_embd: int) -> nn.Module:
        return ScalarLinear(n_embd)

    def action_head(self, n_embd: int) -> nn.Linear:
        return nn.Linear(n_embd, (2 if self.learn_var else 1) * self.action_dim)

    def reward_head(self, n_embd: int) -> nn.Linear:
        return nn.Linear(n_embd, 1)

    def next_state_head(self, n_embd: int) -> nn.Linear:
        return nn.Linear(n_embd, self.obs_dim)

    def gaussian(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation [..., action_dim] of the policy head's output [..., k].

        The head's second half is a log-variance (official `var = exp(.)`); without `learn_var`
        the standard deviation is 1, as the official code samples then.
        """
        mean = out[..., : self.action_dim].float()
        if not self.learn_var:
            return mean, torch.ones_like(mean)
        return mean, out[..., self.action_dim :].float().div(2).exp()

    def predicted_reward(self, out: torch.Tensor) -> torch.Tensor:
        """The reward head's output [..., 1] as a reward [...], clipped to [0, reward_max] (Meta-World's range)."""
        return out[..., 0].float().clamp(0.0, self.reward_max)

    def action_loss(self, out: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        mean, target = out[..., : self.action_dim].float(), action.float()
        mse = F.mse_loss(mean, target)
        loss = F.gaussian_nll_loss(mean, target, out[..., self.action_dim :].float().exp(), full=True) if self.learn_var else mse
        return loss, {"loss_action": loss.detach(), "mse_action": mse.detach()}

    def reward_loss(self, out: torch.Tensor, reward: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        loss = F.mse_loss(self.predicted_reward(out), reward.float())
        return loss, {"loss_reward": loss.detach()}

    def next_state_loss(self, out: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
        """MSE of the predicted next observation (unclipped: the official code clips to the env's
        observation box, which a network config does not know)."""
        loss = F.mse_loss(out.float(), state.float())
        return loss, {"loss_next_state": loss.detach()}


Space = GridSpace | ContinuousSpace

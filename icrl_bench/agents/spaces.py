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

The model configs live here too, below the spaces they build: `ModelConfig` (what fixes any agent's
network) and its two kinds, `GridModelConfig` and `ContinuousModelConfig`, whose fields are exactly
what their space needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from icrl_bench.agents.transformer import TransformerConfig

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


class CellXYEmbedding(nn.Module):
    """Cell indices [...] -> a learned vector per cell plus a linear map of the cell's (x, y) scaled
    to [0, 1] [..., C]: the "cell+xy" state features for networks that embed cell indices (IDT; the
    dense AD adds its own map of the raw cells, ad.py). A never-rewarded goal is near its neighbours."""

    def __init__(self, grid_size: int, n_embd: int):
        super().__init__()
        self.grid_size = grid_size
        self.cell = nn.Embedding(grid_size**2, n_embd)
        self.xy = nn.Linear(2, n_embd)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        xy = state_from_index(index, self.grid_size).to(self.xy.weight.dtype) / (self.grid_size - 1)
        return self.cell(index) + self.xy(xy)


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
        # the dense AD adds the coordinates itself; IDT's embeddings take them in either layout
        self.xy_in_embedding = config.state_features == "cell+xy" and (config.layout != "dense" or config.any_layout_xy)

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
        return CellXYEmbedding(self.grid_size, n_embd) if self.xy_in_embedding else nn.Embedding(self.n_cells, n_embd)

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


# --- model configs: what fixes a network; the kind's config builds its space -------------------------

KINDS = ("discrete", "continuous")
LAYOUTS = ("dicp", "dense")
STATE_FEATURES = ("cell", "cell+xy")


@dataclass
class ModelConfig:
    """What fixes any agent's network (the DICP cfg/model/*.yaml keys); subclasses add the env kind's."""

    kind: ClassVar[str] = ""  # "discrete" (grid worlds) or "continuous" (Meta-World): which space
    n_transit: int = 80  # transitions per training sequence (context n_transit - 1, plus the query)
    dynamics: bool = False  # DICP: add the action-query token and the reward / next-state heads
    dynamics_strength: float = 1.0  # weight of the dynamics losses next to the action loss
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    layout: str = "dicp"  # token layout: "dicp" (the official one) or "dense" (grid worlds: ad.py's DenseAD, idt.py's DecisionsToGo)

    def __post_init__(self) -> None:
        if isinstance(self.transformer, dict):
            self.transformer = TransformerConfig(**self.transformer)
        if self.n_transit < 2:
            raise ValueError(f"n_transit must be >= 2, got {self.n_transit}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.dynamics_strength < 0:
            raise ValueError(f"dynamics_strength must be >= 0, got {self.dynamics_strength}")

    def space(self) -> Space:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """Build from plain data, refusing unknown keys (a typo must not be silently ignored)."""
        values = dict(values)
        kind = values.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ValueError(f"this is a {cls.kind} config, but the values say kind {kind!r}")
        known = {f.name for f in fields(cls)}
        unknown_keys = sorted(set(values) - known)
        if unknown_keys:
            raise ValueError(f"unknown model config key(s) {', '.join(unknown_keys)}; known: {', '.join(sorted(known))}")
        if isinstance(values.get("transformer"), dict):
            t_known = {f.name for f in fields(TransformerConfig)}
            bad = sorted(set(values["transformer"]) - t_known)
            if bad:
                raise ValueError(f"unknown transformer config key(s) {', '.join(bad)}; known: {', '.join(sorted(t_known))}")
        return cls(**values)


@dataclass
class GridModelConfig(ModelConfig):
    """A grid-world network: cells and discrete actions (official gridworld/cfg/model/*.yaml)."""

    kind: ClassVar[str] = "discrete"
    grid_size: int = 9
    num_actions: int = 5
    dim_state: int = 2
    n_reward_classes: int = 2
    label_smoothing: float = 0.0
    # The dense layout's state in a token: a learned vector per cell ("cell"), or that plus a linear
    # map of the cell's (x, y) ("cell+xy"), which the official context tokens see (a Linear over
    # coordinates): a goal cell never rewarded in training is still near the cells it borders.
    # IDT's embeddings take it in its own layout too (`any_layout_xy`).
    state_features: str = "cell"
    any_layout_xy: ClassVar[bool] = False  # whether "cell+xy" is allowed outside the dense layout

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.state_features not in STATE_FEATURES:
            raise ValueError(f"state_features must be one of {', '.join(STATE_FEATURES)}, got {self.state_features!r}")
        if self.state_features != "cell" and self.layout != "dense" and not self.any_layout_xy:
            raise ValueError(f"state_features {self.state_features!r} is a dense-layout option (and IDT's); the dicp layout's tokens fix their own")

    def space(self) -> GridSpace:
        return GridSpace(self)


@dataclass
class ContinuousModelConfig(ModelConfig):
    """A continuous-control network (official metaworld/cfg/model/{ad,idt}_ml1.yaml)."""

    kind: ClassVar[str] = "continuous"
    n_transit: int = 1000  # 10 episodes of 100 steps
    obs_dim: int = 11  # 18 for hammer, stick-push, stick-pull (set from the dataset)
    action_dim: int = 4
    learn_var: bool = True  # Gaussian policy with a learned variance (Gaussian NLL); else the mean, MSE
    learn_transition: bool = False  # DICP: also regress the next observation (the official default: no)
    reward_max: float = 10.0  # Meta-World's per-step reward range [0, reward_max]: predicted rewards are clipped to it

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.obs_dim < 1 or self.action_dim < 1:
            raise ValueError(f"obs_dim and action_dim must be >= 1, got {self.obs_dim}, {self.action_dim}")
        if self.reward_max <= 0:
            raise ValueError(f"reward_max must be > 0, got {self.reward_max}")

    def space(self) -> ContinuousSpace:
        return ContinuousSpace(self)

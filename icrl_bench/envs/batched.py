"""All tasks x streams of a grid world stepped at once with tensor operations.

The batched form is what the fast source (batched PPO) and the evaluation harness run:
one call to `step` advances B independent episodes. It covers the three grid worlds with
one set of arrays: Darkroom is the identity permutation and no key; Darkroom-Permuted a
permutation, start (0, 0) and the far-corner goal; Dark Key-to-Door a key and one-shot
rewards. The single-task Gymnasium envs are the reference it is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from icrl_bench.envs.grid import GRID_SIZE, greedy_action, move


@dataclass
class BatchedStep:
    """What one batched step returns; all tensors have leading shape [B]."""

    next_obs: torch.Tensor  # [B, 2] the cell reached (the true terminal cell at an episode's end)
    reward: torch.Tensor  # [B] float32
    done: torch.Tensor  # [B] bool: the episode ended at this step (horizon reached)
    obs: torch.Tensor  # [B, 2] the observation to act on next (the start cell where done)


class BatchedGridWorld:
    """B grid-world episodes with per-episode task parameters.

    Args:
        start: [B, 2] start cells.
        goal: [B, 2] goal (door) cells.
        perm: [B, 5] action permutation (identity for Darkroom).
        key: [B, 2] key cells, or None for the rooms without a key.
        horizon: steps per episode, shared by the batch.
    """

    def __init__(
        self,
        start: torch.Tensor,
        goal: torch.Tensor,
        perm: torch.Tensor,
        key: torch.Tensor | None,
        horizon: int,
        grid_size: int = GRID_SIZE,
    ):
        self.start = start.long()
        self.goal = goal.long()
        self.perm = perm.long()
        self.inverse_perm = torch.argsort(self.perm, dim=-1)
        self.key = None if key is None else key.long()
        self.horizon = horizon
        self.grid_size = grid_size
        self.num_envs = start.shape[0]
        self.device = start.device
        self.state = self.start.clone()
        self.t = torch.zeros(self.num_envs, dtype=torch.long, device=self.device)
        self.have_key = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        self.reached_goal = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def reset(self) -> torch.Tensor:
        """Start every episode afresh; returns the observations [B, 2]."""
        self.state = self.start.clone()
        self.t.zero_()
        self.have_key.zero_()
        self.reached_goal.zero_()
        return self.state.clone()

    def step(self, action: torch.Tensor) -> BatchedStep:
        """Advance every episode by one action [B]; finished episodes restart at once."""
        effective = torch.gather(self.perm, 1, action.long().view(-1, 1)).squeeze(1)
        next_obs = move(self.state, effective, self.grid_size)
        at_goal = (next_obs == self.goal).all(-1)
        if self.key is None:
            reward = at_goal.float()
        else:
            got_key = ~self.have_key & (next_obs == self.key).all(-1)
            got_goal = self.have_key & ~self.reached_goal & at_goal
            self.have_key |= got_key
            self.reached_goal |= got_goal
            reward = (got_key | got_goal).float()
        self.t += 1
        done = self.t >= self.horizon
        self.state = torch.where(done.unsqueeze(-1), self.start, next_obs)
        self.t = torch.where(done, torch.zeros_like(self.t), self.t)
        self.have_key &= ~done
        self.reached_goal &= ~done
        return BatchedStep(next_obs=next_obs, reward=reward, done=done, obs=self.state.clone())

    def optimal_action(self, obs: torch.Tensor | None = None, have_key: torch.Tensor | None = None) -> torch.Tensor:
        """The oracle's action for each episode (at its current cell by default)."""
        obs = self.state if obs is None else obs.long()
        target = self.goal
        if self.key is not None:
            have_key = self.have_key if have_key is None else have_key
            target = torch.where(have_key.unsqueeze(-1), self.goal, self.key)
        effective = greedy_action(obs, target)
        return torch.gather(self.inverse_perm, 1, effective.view(-1, 1)).squeeze(1)

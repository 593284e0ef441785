"""Shared constants and vectorised dynamics of the DICP grid worlds.

Everything that more than one grid world needs lives here once: the grid size, the
action effects (in the official code's order), the action permutations of
Darkroom-Permuted, and the oracle policy. The vectorised functions work on torch
tensors of any leading shape so the batched env, the dataset builder and the oracle
agent all share one implementation.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

GRID_SIZE = 9
N_ACTIONS = 5

# Action a moves the agent by MOVES[a]: 0: +x, 1: -x, 2: +y, 3: -y, 4: stay
# (the order of the official DICP code, gridworld/env/darkroom.py).
MOVES = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [0, 0]], dtype=np.int64)

# Darkroom-Permuted's task i applies PERMUTATIONS[i][a] instead of a: the 5! = 120 orderings
# in itertools' order, as in the official code.
PERMUTATIONS = np.array(list(itertools.permutations(range(N_ACTIONS))), dtype=np.int64)


def move(position: torch.Tensor, action: torch.Tensor, grid_size: int = GRID_SIZE) -> torch.Tensor:
    """Cells reached by taking `action` from `position`, clipped to the grid.

    Args:
        position: integer tensor [..., 2].
        action: integer tensor [...] of effective (already un-permuted) actions.
    """
    moves = torch.as_tensor(MOVES, device=position.device)
    return (position + moves[action]).clamp(0, grid_size - 1)


def greedy_action(position: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The oracle's effective action towards `target`: fix x first, then y, then stay.

    This is the official code's `get_optimal_action`; ties are broken the same way so
    DPT's labels match the paper's datasets exactly.
    """
    dx = target[..., 0] - position[..., 0]
    dy = target[..., 1] - position[..., 1]
    stay = torch.full_like(dx, 4)
    action = torch.where(dy < 0, torch.full_like(dx, 3), stay)
    action = torch.where(dy > 0, torch.full_like(dx, 2), action)
    action = torch.where(dx < 0, torch.full_like(dx, 1), action)
    return torch.where(dx > 0, torch.full_like(dx, 0), action)

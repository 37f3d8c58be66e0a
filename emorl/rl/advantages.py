"""Group-relative advantages (GRPO, EMO-RL eq. 5): each answer's reward against its group's."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

AdvantageScale = Literal["group", "batch", "none"]
#: Added to the standard deviation before dividing (as TRL does), so tiny spreads stay finite.
STD_EPS = 1e-4


def group_advantages(
    rewards: Tensor,
    group_size: int,
    scale: AdvantageScale = "group",
    eps: float = STD_EPS,
) -> tuple[Tensor, Tensor]:
    """Advantages of ``rewards`` ``(P * G,)``, laid out prompt by prompt (G answers each).

    ``A_i = (r_i - mean(group)) / (std + eps)`` where ``std`` is the group's (``scale="group"``,
    EMO-RL / DeepSeekMath), the whole batch's (``"batch"``) or 1 (``"none"``: Dr. GRPO, no
    division). Standard deviations are unbiased (``torch.std`` with correction 1, as TRL). A group
    whose rewards are all equal carries no signal: its advantages are exactly 0 (never NaN, never
    rounding noise divided by eps). ``group_size`` 1 gives zeros.

    Returns ``(advantages (P * G,), zero_std (P,) bool)``. Under DDP pass the rewards of every rank
    (gathered) when ``scale="batch"``, so the batch standard deviation is the global one.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, got {tuple(rewards.shape)}")
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"advantage scale must be group, batch or none, not {scale!r}")
    rewards = rewards.float()
    groups = rewards.view(-1, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if group_size > 1:
        group_std = groups.std(dim=1, keepdim=True)
    else:
        group_std = torch.zeros_like(groups[:, :1])
    zero_std = (groups.max(dim=1).values - groups.min(dim=1).values) == 0
    if scale == "group":
        advantages = centred / (group_std + eps)
    elif scale == "batch":
        batch_std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
        advantages = centred / (batch_std + eps)
    else:
        advantages = centred
    advantages = torch.where(zero_std[:, None], torch.zeros_like(advantages), advantages)
    return advantages.reshape(-1), zero_std

"""The GRPO policy loss: clipped importance ratio times advantage, plus k3 KL, four normalisations.

Per completion token t of answer i (the loss of TRL's ``GRPOTrainer``, ``trl/trainer/grpo_trainer.py``;
DeepSeekMath's GRPO, arXiv:2402.03300, with the clip range of DAPO, arXiv:2503.14476)::

    r   = exp(logp - old_logp)
    l   = -min(r * A_i, clip(r, 1 - epsilon, 1 + epsilon_high) * A_i) + beta * KL
    KL  = exp(ref_logp - logp) - (ref_logp - logp) - 1          (the k3 estimator, >= 0)

and the mean over tokens is taken one of four ways (``loss_type``), with m the completion mask:

- ``grpo``: per answer ``sum_t(l m) / sum_t(m)``, then the mean over answers (DeepSeekMath);
- ``bnpo``: ``sum(l m) / sum(m)`` over the local batch;
- ``dr_grpo``: ``sum(l m) / (num_answers * max_completion_length)`` (Dr. GRPO: no length bias);
- ``dapo``: ``sum(l m) / (global_active_tokens / world_size)``, where ``global_active_tokens``
  counts the completion tokens of everything that goes into one optimiser step on every rank (all
  accumulation micro-batches, all ranks). DDP averages gradients over ranks, hence the
  ``/ world_size``; the result is the token mean over the whole global batch.

For ``grpo``, ``bnpo`` and ``dr_grpo`` the caller divides by the number of accumulation
micro-batches (each micro-batch's loss is a mean); for ``dapo`` it must not (the normaliser
already spans the whole step).

With one update per generation the old log-probs are the current ones, detached (r = 1, the
gradient is ``-A_i * grad(logp)`` up to the normalisation).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def kl_k3(logps: Tensor, ref_logps: Tensor) -> Tensor:
    """The k3 estimator of KL(policy || reference) per token: ``exp(d) - d - 1`` with ``d = ref - logp``."""
    delta = ref_logps - logps
    return torch.exp(delta) - delta - 1.0


def grpo_loss(
    logps: Tensor,
    old_logps: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    ref_logps: Tensor | None = None,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: LossType = "grpo",
    max_completion_length: int | None = None,
    global_active_tokens: float | Tensor | None = None,
    world_size: int = 1,
) -> tuple[Tensor, dict[str, Tensor]]:
    """The GRPO loss of one micro-batch (see the module docstring) and detached statistics.

    Args:
        logps / old_logps / ref_logps: ``(B, T)`` per-token log-probs of the sampled completion
            tokens under the policy (with grad), the policy that sampled them, the reference.
        advantages: ``(B,)`` one per answer.
        mask: ``(B, T)`` 1 on completion tokens that count (0 on padding, optionally on
            truncated answers).
        beta: KL weight (0: no reference needed).
        epsilon / epsilon_high: clip range ``[1 - epsilon, 1 + epsilon_high]`` (``epsilon_high``
            defaults to ``epsilon``; DAPO's clip-higher sets it larger).
        loss_type: ``grpo``, ``bnpo``, ``dr_grpo`` or ``dapo``.
        max_completion_length: for ``dr_grpo``.
        global_active_tokens / world_size: for ``dapo`` (defaults: this batch's tokens, 1).

    Returns ``(loss, stats)`` with stats ``kl`` (token mean, when beta > 0), ``clip_low``,
    ``clip_high``, ``clip_fraction`` (shares of tokens whose ratio was clipped where it mattered),
    ``ratio`` (token mean).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, not {loss_type!r}")
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.to(logps.dtype)
    adv = advantages.to(logps.dtype).unsqueeze(1)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    stats: dict[str, Tensor] = {}
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs ref_logps")
        kl = kl_k3(logps, ref_logps)
        per_token = per_token + beta * kl
        stats["kl"] = _masked_mean(kl.detach(), mask)

    total = (per_token * mask).sum()
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = total / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        if not max_completion_length:
            raise ValueError("dr_grpo needs max_completion_length")
        loss = total / (logps.shape[0] * max_completion_length)
    else:
        tokens = mask.sum() if global_active_tokens is None else torch.as_tensor(global_active_tokens, dtype=logps.dtype)
        loss = total / (tokens.clamp(min=1.0) / world_size)

    with torch.no_grad():
        low = ((ratio < 1.0 - epsilon) & (adv < 0)).to(mask.dtype)
        high = ((ratio > 1.0 + epsilon_high) & (adv > 0)).to(mask.dtype)
        stats["clip_low"] = _masked_mean(low, mask)
        stats["clip_high"] = _masked_mean(high, mask)
        stats["clip_fraction"] = _masked_mean(torch.maximum(low, high), mask)
        stats["ratio"] = _masked_mean(ratio.detach(), mask)
    return loss, stats


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1.0)

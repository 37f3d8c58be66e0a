"""The optimiser every trained emorl LALM module uses: AdamW over the trainable weights, linear warm-up.

SFT (:class:`~emorl.models.sft.SFTLALM`) and GRPO (:class:`~emorl.models.grpo.GRPOLALM`) mean the
same thing by ``lr``, ``weight_decay`` and ``warmup_steps``; they differ in one point that their
checkpoints record: SFT has no scheduler when there is no warm-up, GRPO always has one (a
constant factor 1 after warm-up). ``scheduler_without_warmup`` keeps each as it was, so
checkpoints written before this function existed resume unchanged.
"""

from __future__ import annotations

import lightning as L
import torch


def adamw_with_warmup(module: L.LightningModule, lr: float, weight_decay: float = 0.0, warmup_steps: int = 0,
                      scheduler_without_warmup: bool = True):
    """AdamW over ``module``'s trainable parameters; the learning rate ramps linearly over
    ``warmup_steps`` optimiser steps (step ``k`` uses ``lr * min(1, (k + 1) / warmup_steps)``).

    Returns what ``configure_optimizers`` returns: the optimiser alone when there is no warm-up and
    ``scheduler_without_warmup`` is false, else the optimiser with a per-step ``LambdaLR``.
    """
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise RuntimeError("nothing to train: set lora, train_projector or full_finetune")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = int(warmup_steps)
    if warmup <= 0 and not scheduler_without_warmup:
        return optimizer
    warmup = max(warmup, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

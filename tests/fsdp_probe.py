"""A small sharded module and a recorder for the FSDP2 checkpoint and multi-node tests.

:class:`ShardedAcoustic` is the acoustic baseline with what makes a checkpoint under FSDP2
representative of emorl's audio-language models: a frozen layer (never saved), trainable layers
sharded with ``fully_shard`` in ``configure_model`` (per layer, then the root), AdamW, a warm-up
scheduler, and trainable-weights-only checkpoints (:mod:`emorl.models.checkpoints`). On one device
(no mesh) it shards nothing, as emorl's modules do.

:class:`RecordSteps` writes, per rank, the keys of each training batch, the loss, and (rank 0) the
full trainable weights after every optimiser step and at the end of fit (or at SIGTERM) / at the
start of test.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch
from torch import nn

import tests.ddp_probe  # noqa: F401  (registers the answer_length reward for the GRPO runs)
from emorl.models.acoustic import AcousticBaseline
from emorl.models.checkpoints import check_trainable_weights, keep_trainable_weights


class ShardedAcoustic(AcousticBaseline):
    """The acoustic baseline behind a frozen random projection, sharded under FSDP2."""

    def __init__(self, *args, warmup_steps: int = 3, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        width = self.mlp[0].in_features
        generator = torch.Generator().manual_seed(1234)  # the same frozen layer in every process
        self.frozen = nn.Linear(width, width)
        with torch.no_grad():
            self.frozen.weight.copy_(torch.randn(width, width, generator=generator) / width ** 0.5)
            self.frozen.bias.zero_()
        self.frozen.requires_grad_(False)
        self.strict_loading = False

    def configure_model(self) -> None:
        """``fully_shard`` each trainable Linear, the frozen layer, then the root (the data-parallel mesh)."""
        if self.device_mesh is None:
            return
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in [m for m in self.mlp if isinstance(m, nn.Linear)] + [self.frozen]:
            fully_shard(layer, mesh=mesh)
        fully_shard(self, mesh=mesh)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.frozen((features - self.feature_mean) / self.feature_std))

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        warmup = self.hparams.warmup_steps
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep_trainable_weights(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_trainable_weights(self, checkpoint)


def full_trainable_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable weight, unsharded (a collective under FSDP: every rank calls it)."""
    out = {}
    for name, param in module.named_parameters():
        if param.requires_grad:
            tensor = param.detach()
            out[name] = (tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor).cpu().clone()
    return out


def local_trainable_numel(module: nn.Module) -> int:
    """Trainable weights held by this rank (its local shards under FSDP)."""
    return sum((p.to_local() if hasattr(p, "to_local") else p).numel() for p in module.parameters() if p.requires_grad)


class RecordSteps(L.Callback):
    """Per rank: ``steps.rank{R}.json`` (keys, loss, lr per step); rank 0: ``weights.{stage}.pt``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)
        self.steps: list[dict] = []
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        self.initial: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, module) -> None:
        self.initial = full_trainable_weights(module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:  # manual optimisation (GRPO): the logged loss
            loss = trainer.callback_metrics.get("train/loss", float("nan"))
        self.steps.append({"step": trainer.global_step, "keys": [str(k) for k in batch["key"]],
                           "loss": float(loss), "lr": trainer.optimizers[0].param_groups[0]["lr"]})
        self.weights[trainer.global_step] = full_trainable_weights(module)

    def on_train_end(self, trainer, module) -> None:
        self._write(trainer, module, full_trainable_weights(module))

    def on_exception(self, trainer, module, exception) -> None:
        """At SIGTERM (every rank stops after the same batch): what was recorded, no collective."""
        self._write(trainer, module, self.weights[max(self.weights)] if self.weights else {})

    def _write(self, trainer, module, final: dict[str, torch.Tensor]) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"steps.rank{trainer.global_rank}.json").write_text(json.dumps(
            {"rank": trainer.global_rank, "world_size": trainer.world_size, "node_rank": trainer.node_rank,
             "global_step": trainer.global_step, "steps": self.steps,
             "local_numel": local_trainable_numel(module)}))
        torch.save({"final": final, "initial": self.initial, "per_step": self.weights},
                   self.out_dir / f"weights.fit.rank{trainer.global_rank}.pt")

    def on_test_start(self, trainer, module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"final": full_trainable_weights(module)}, self.out_dir / f"weights.test.rank{trainer.global_rank}.pt")


class RecordGRPOSteps(RecordSteps):
    """:class:`RecordSteps` for GRPO: the loss is the step's loss (manual optimisation returns none), and
    the answers sampled on this rank are recorded with the keys (exact resume: the same answers)."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)
        rollout = module.last_rollout
        self.steps[-1]["keys"] = self.steps[-1]["keys"] + list(getattr(rollout, "texts", []) or [])

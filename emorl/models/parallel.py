"""Where SFT and GRPO meet the strategy: ``configure_model``'s body, fp32 masters, gradient sync.

    def configure_model(self):
        configure_backbone(self)                       # SFTLALM / GRPOLALM

* Under Lightning's ``ModelParallelStrategy`` (``emorl.strategy.FSDP2Strategy``; the module's
  ``device_mesh`` is set) the backbone is sharded with FSDP2 over the mesh's ``data_parallel``
  dimension (:func:`emorl.lalm.sharding.shard_model`): per audio-encoder layer, per decoder layer,
  the directly called modules, the root. Under full fine-tuning the trainable weights become fp32
  masters unit by unit as they are sharded, and compute runs in ``dtype`` (FSDP2's
  ``MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=float32)``).
* On one device or under DDP nothing is sharded; under full fine-tuning the trainable weights
  still become fp32 masters and the forward passes run under autocast to ``dtype``
  (:meth:`emorl.lalm.backbone.Backbone.use_fp32_masters`): AdamW at lr 1e-6 cannot move bf16
  weights (one step changes ~2 % of them).
* LoRA: the frozen base stays in ``dtype``, the adapters are fp32 (peft) on every path.

Loading: every rank loads the model to host memory (``__init__``, as today), ``configure_model``
then shards it unit by unit, so a GPU never holds more than its shards plus one unit's full
weights while sharding (see ``docs/scale.md``).
"""

from __future__ import annotations

import contextlib

import lightning as L

from emorl.lalm.backbone import DTYPES
from emorl.lalm.sharding import gradient_sync, shard_model


class ShardingError(ValueError):
    """A parallel layout emorl does not run (e.g. tensor parallelism)."""


def data_parallel_mesh(module: L.LightningModule):
    """The 1-D mesh FSDP shards over (the strategy's ``data_parallel`` dimension), or ``None``
    when the module does not run under ``ModelParallelStrategy``."""
    mesh = getattr(module, "device_mesh", None)
    if mesh is None:
        return None
    names = mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise ShardingError(
            f"tensor_parallel_size {mesh['tensor_parallel'].size()}: emorl shards with FSDP over the data-parallel "
            "ranks only; set the strategy's data_parallel_size to the world size and tensor_parallel_size to 1 "
            "(emorl.strategy.FSDP2Strategy does)"
        )
    return mesh["data_parallel"] if "data_parallel" in names else mesh


def configure_backbone(module: L.LightningModule, extra_models: list | None = None) -> None:
    """``configure_model``'s body for SFT / GRPO (idempotent: Lightning may call it per stage).

    ``extra_models``: frozen transformers models that follow the policy's layout (GRPO's reference
    copy under full fine-tuning): sharded the same way under FSDP, left as they are otherwise.
    """
    if getattr(module, "_emorl_configured", False):
        return
    module._emorl_configured = True
    backbone = module.backbone
    full_finetune = bool(module.hparams.full_finetune)
    mesh = data_parallel_mesh(module)
    if mesh is None:
        if full_finetune:
            backbone.use_fp32_masters()
        return
    compute = DTYPES[module.hparams.dtype]
    if full_finetune:
        backbone.options["fp32_masters"] = True
    shard_model(backbone.hf_model, mesh, compute, fp32_masters=full_finetune)
    for model in extra_models or []:
        shard_model(model, mesh, compute)


def micro_batch_sync(module: L.LightningModule, last: bool):
    """The gradient reduction of one micro-batch's backward.

    FSDP: full fine-tuning reduce-scatters on every micro-batch (keeping the gradients unsharded
    until the last one would hold a whole fp32 gradient on every rank); LoRA skips the reduction
    on all but the last (its gradients are small). DDP: ``no_sync`` on all but the last, as before.
    """
    backbone = module.backbone
    if backbone.sharded:
        return gradient_sync(backbone.hf_model, enabled=last or bool(module.hparams.full_finetune))
    if last:
        return contextlib.nullcontext()
    block = getattr(module.trainer.strategy, "block_backward_sync", None)
    return block() if block is not None else contextlib.nullcontext()

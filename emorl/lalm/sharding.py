"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for the audio-language backbones and the judge.

    from emorl.lalm.sharding import shard_model, unsharded
    shard_model(backbone.hf_model, mesh, torch.bfloat16, fp32_masters=True)   # in configure_model
    with unsharded(backbone.hf_model):                             # one all-gather per unit
        result = generate(backbone, prompts, ...)                  # no gather per decoding step

**The plan** (:func:`shard_units`, bottom-up): every audio-encoder layer, the projector, the rest of
the audio tower, (Omni) every vision block and the rest of the vision tower, every decoder layer, the
token embeddings, the rest of the language model (its final norm), ``lm_head``, then the root (the
transformers model). emorl calls the embeddings, the audio tower, the inner text model and
``lm_head`` directly (prompt embeddings once per clip, the answers' log-probs with the vocabulary
in chunks), not through the root's forward, so each of them is a unit of its own: FSDP gathers a
unit's weights in that unit's own forward. The root holds no weight; it is lazily initialised
right after sharding so that it is the FSDP root whatever runs first, and every unit is gathered
and freed once, one at a time (see :func:`shard_model`).

**Precision**: ``MixedPrecisionPolicy(param_dtype=compute dtype, reduce_dtype=float32)``: the
shards keep the weights' own dtype (fp32 masters for what is trained under full fine-tuning,
:func:`cast_trainable_to_fp32` per unit before it is sharded, so the host never holds the fp32
copy of the whole model; the frozen weights stay in the loaded dtype), the forward and backward
run in the compute dtype, gradients are reduced in fp32. In float32 (the CPU tests) nothing is cast.

**Generation** (:func:`unsharded`): every unit is all-gathered once and kept gathered
(``set_reshard_after_forward(False)``) for the whole block, then resharded: one all-gather per unit
per rollout, never one per decoding step. :func:`count_all_gathers` counts the all-gathers (tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

#: the modules a rollout never calls (Omni's vision tower): not gathered by :func:`unsharded`
SKIP_IN_GENERATION = "_emorl_skip_in_generation"


def is_sharded(module: nn.Module) -> bool:
    """Whether ``module`` went through ``fully_shard`` (is an FSDP2 module)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def shard_units(hf_model: nn.Module) -> list[tuple[str, nn.Module | list[nn.Module]]]:
    """``(name, module)`` units of an audio-language model (or of a plain causal LM), bottom-up.

    Units are the modules emorl's code calls directly and the repeated layers; a unit given as a
    list (tied input / output embeddings) is sharded as one group.
    """
    inner = hf_model.model
    units: list[tuple[str, nn.Module | list[nn.Module]]] = []
    tower = getattr(inner, "audio_tower", None)
    if tower is not None:
        units += [(f"audio_tower.layers.{i}", layer) for i, layer in enumerate(tower.layers)]
        projector = inner.multi_modal_projector if hasattr(inner, "multi_modal_projector") else tower.proj
        units.append(("projector", projector))
        units.append(("audio_tower", tower))
    visual = getattr(inner, "visual", None)
    if visual is not None:
        units += [(f"visual.blocks.{i}", block) for i, block in enumerate(visual.blocks)]
        units.append(("visual", visual))
    language_model = getattr(inner, "language_model", inner)
    units += [(f"layers.{i}", layer) for i, layer in enumerate(language_model.layers)]
    embed, head = language_model.embed_tokens, hf_model.lm_head
    if head.weight is embed.weight:
        units.append(("embed_tokens+lm_head", [embed, head]))
        units.append(("language_model", language_model))
    else:
        units.append(("embed_tokens", embed))
        units.append(("language_model", language_model))
        units.append(("lm_head", head))
    return units


def mixed_precision(compute_dtype: torch.dtype):
    """FSDP2's policy: gather and compute in ``compute_dtype``, reduce gradients in float32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if compute_dtype == torch.float32:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)


def cast_trainable_to_fp32(module: nn.Module) -> int:
    """Trainable, not yet sharded weights of ``module`` to float32 in place (fp32 masters); returns
    how many were cast. Frozen weights keep their dtype."""
    from torch.distributed.tensor import DTensor

    cast = 0
    for param in module.parameters():
        if param.requires_grad and not isinstance(param, DTensor) and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


def shard_model(hf_model: nn.Module, mesh, compute_dtype: torch.dtype, fp32_masters: bool = False,
                units: Sequence[tuple[str, nn.Module | list[nn.Module]]] | None = None) -> list[str]:
    """``fully_shard`` every unit of :func:`shard_units` and the root over the 1-D ``mesh``; with
    ``fp32_masters`` the trainable weights become fp32 one unit at a time, just before their unit
    is sharded. Returns the units' names."""
    from torch.distributed.fsdp import fully_shard

    policy = mixed_precision(compute_dtype)
    units = list(units if units is not None else shard_units(hf_model))
    for name, module in units:
        if fp32_masters:
            for part in module if isinstance(module, list) else [module]:
                cast_trainable_to_fp32(part)
        fully_shard(module, mesh=mesh, mp_policy=policy)
        if name.startswith("visual"):
            setattr(module, SKIP_IN_GENERATION, True)
    if fp32_masters:
        cast_trainable_to_fp32(hf_model)
    fully_shard(hf_model, mesh=mesh, mp_policy=policy)
    # emorl calls units (embeddings, audio tower, lm_head) before any root forward: make the root
    # the root now, or the first unit called would claim it (FSDP's root is the first to run)
    hf_model._get_fsdp_state()._lazy_init()
    # gather and free every unit once: with a reduce dtype, FSDP's end-of-backward callback touches
    # the unsharded parameters of every unit, including one never run so far (Omni's vision tower)
    # and fails on a unit never gathered; one unit at a time, so peak memory is one unit's weights
    for module in fsdp_modules(hf_model):
        module.unshard()
        module.reshard()
    return [name for name, _ in units]


def fsdp_modules(root: nn.Module) -> list[nn.Module]:
    """The FSDP modules under ``root`` (itself included), in ``modules()`` order."""
    return [m for m in root.modules() if is_sharded(m)]


@contextlib.contextmanager
def unsharded(root: nn.Module) -> Iterator[None]:
    """Inside the block every unit of ``root`` (but the skipped ones) is gathered, once, and stays
    gathered across forward calls; resharded on exit. A no-op for a module that is not sharded or
    is already inside this block (re-entrant: a rollout's prompts and generation share one gather)."""
    if not is_sharded(root) or getattr(root, "_emorl_unsharded", False):
        yield
        return
    modules = [m for m in fsdp_modules(root) if not getattr(m, SKIP_IN_GENERATION, False)]
    root._emorl_unsharded = True
    try:
        for module in modules:
            module.set_reshard_after_forward(False, recurse=False)
        for module in modules:
            module.unshard()
        yield
    finally:
        for module in modules:
            module.reshard()
            # FSDP's defaults: the root keeps its (empty) group gathered after forward, units reshard
            module.set_reshard_after_forward(module is not root, recurse=False)
        root._emorl_unsharded = False


@contextlib.contextmanager
def gradient_sync(root: nn.Module, enabled: bool) -> Iterator[None]:
    """Inside the block, FSDP reduce-scatters gradients (``enabled``) or keeps them unsharded and
    accumulating on the rank (``set_requires_gradient_sync(False)``); back to reducing on exit."""
    if enabled or not is_sharded(root):
        yield
        return
    root.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        root.set_requires_gradient_sync(True)


# -- counting (tests, benchmarks) ---------------------------------------------------------------------
@contextlib.contextmanager
def _counting(name: str) -> Iterator[list[int]]:
    from torch.distributed.fsdp._fully_shard import _fsdp_param_group as group_module

    original = getattr(group_module, name)
    count = [0]

    def counting(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    setattr(group_module, name, counting)
    try:
        yield count
    finally:
        setattr(group_module, name, original)


def count_all_gathers():
    """Counts FSDP2's parameter all-gathers inside the block (one per unit gathered):
    ``with count_all_gathers() as n: ...; n[0]``."""
    return _counting("foreach_all_gather")


def count_reduce_scatters():
    """Counts FSDP2's gradient reduce-scatters inside the block (one per unit with gradients per
    reducing backward): ``with count_reduce_scatters() as n: ...; n[0]``."""
    return _counting("foreach_reduce")


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor; a plain tensor as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def local_bytes(module: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict[str, int]:
    """Bytes this rank holds for ``module``'s parameters, their gradients and ``optimizer``'s
    states, measured on the local shards."""
    def size(t: torch.Tensor) -> int:
        t = local_tensor(t)
        return t.numel() * t.element_size()

    params = list(module.parameters())
    counted = {
        "parameters": sum(size(p) for p in params),
        "gradients": sum(size(p.grad) for p in params if p.grad is not None),
        "optimizer": 0,
    }
    if optimizer is not None:
        counted["optimizer"] = sum(size(v) for state in optimizer.state.values() for v in state.values()
                                   if isinstance(v, torch.Tensor) and v.dim() > 0)
    return counted

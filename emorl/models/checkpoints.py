"""Checkpoints that hold only the trained weights, and the train mode of what is trained.

Every audio-language-model module (:mod:`emorl.models.sft`, :mod:`emorl.models.grpo`) saves only
its trainable weights (LoRA adapters, a trained projector: about a thousandth of the model):

- :func:`keep_trainable_weights` (from ``on_save_checkpoint``) drops every frozen weight and
  records the names kept; the module sets ``strict_loading = False`` so that loading fills the
  trained weights and keeps the frozen ones from the base model;
- :func:`check_trainable_weights` (from ``on_load_checkpoint``) refuses a checkpoint whose trained
  weights do not fit the module;
- :func:`load_trained_weights` puts a checkpoint's trained weights on a module
  (``init_checkpoint``: one stage starts from another). Checkpoints are read with
  ``weights_only=True``: a file handed to emorl never runs code when it is loaded;
- :func:`enter_train_mode`: train mode for what is trained (backbones load in eval mode).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch


def trainable_names(module: torch.nn.Module) -> set[str]:
    """Names of the parameters that are trained (``requires_grad``)."""
    return {name for name, param in module.named_parameters() if param.requires_grad}


def keep_trainable_weights(module: L.LightningModule, checkpoint: dict) -> None:
    """Drop every frozen weight from a checkpoint's ``state_dict`` (call from ``on_save_checkpoint``).

    The module must set ``self.strict_loading = False`` so that loading such a checkpoint fills
    the trained weights and keeps the frozen ones from the base model.
    """
    keep = trainable_names(module)
    state = checkpoint.get("state_dict", {})
    for key in [k for k in state if k not in keep]:
        del state[key]
    checkpoint["emorl_trainable_keys"] = sorted(keep)


def check_trainable_weights(module: L.LightningModule, checkpoint: dict) -> None:
    """Refuse a checkpoint whose trained weights do not fit this module (call from ``on_load_checkpoint``)."""
    saved = set(checkpoint.get("state_dict", {}))
    expected = trainable_names(module)
    if "emorl_trainable_keys" not in checkpoint:
        return  # a full checkpoint: Lightning loads it as usual
    missing = sorted(expected - saved)
    unknown = sorted(saved - set(dict(module.named_parameters())) - set(dict(module.named_buffers())))
    if missing or unknown:
        raise RuntimeError(
            "the checkpoint's trained weights do not fit this model (different LoRA / projector "
            f"options?): {len(missing)} missing, e.g. {missing[:3]}; {len(unknown)} unknown, e.g. {unknown[:3]}"
        )


def _load_weights_only(path: str | Path) -> object:
    """``torch.load(weights_only=True)``, memory-mapped: reading a full-fine-tuning checkpoint's
    hyper-parameters (``--ckpt_path``) reads none of its tensors; files of the old, non-zip format
    cannot be mapped and are read whole."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap can only be used" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict:
    """A Lightning checkpoint's dict, read with ``weights_only=True`` (a crafted file cannot run code:
    an emorl checkpoint holds tensors and plain values); anything else is an
    :class:`~emorl.errors.EmorlError` naming ``what`` (``--ckpt_path``, ``init_checkpoint``) and the file."""
    from emorl.errors import EmorlError

    try:
        state = _load_weights_only(path)
    except Exception as err:  # UnpicklingError, a zip / pickle that is not a checkpoint, a text file
        first = str(err).splitlines()[0] if str(err) else ""
        raise EmorlError(f"{what} {path}: not a checkpoint that loads with weights_only=True "
                         f"({type(err).__name__}: {first[:200]}), give the checkpoints/*.ckpt file of an emorl run") from err
    if not isinstance(state, dict) or not isinstance(state.get("state_dict"), dict):
        raise EmorlError(f"{what} {path}: not a Lightning checkpoint (no state_dict), give the "
                         "checkpoints/*.ckpt file of an emorl run")
    return state


def load_trained_weights(module: L.LightningModule, path: str | Path) -> None:
    """Put an emorl checkpoint's trained weights (LoRA, projector, ...) onto ``module``.

    The checkpoint must come from a module with the same trainable weights (same LoRA options,
    projector and full-fine-tuning choices): anything else is refused with a clear error.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"init_checkpoint {path}: no such file")
    state = read_checkpoint(path, "init_checkpoint")
    check_trainable_weights(module, state)
    own = module.state_dict()
    reshaped = [f"{name} {tuple(value.shape)} (here {tuple(own[name].shape)})"
                for name, value in state["state_dict"].items() if name in own and own[name].shape != value.shape]
    if reshaped:  # same names, other LoRA rank: say so before load_state_dict lists every tensor
        raise RuntimeError(f"init_checkpoint {path}: the checkpoint's trained weights do not fit this model "
                           f"(different LoRA rank?): {len(reshaped)} of other shapes, e.g. {reshaped[0]}")
    _, unexpected = module.load_state_dict(state["state_dict"], strict=False)
    if unexpected:
        raise RuntimeError(f"init_checkpoint {path}: unknown weights {unexpected[:3]}")


def enter_train_mode(module: L.LightningModule) -> None:
    """Train mode for what is trained (backbones load in eval mode), so that dropout and gradient
    checkpointing (which transformers applies in train mode only) act; a frozen audio tower stays off."""
    module.model.train()
    if not any(p.requires_grad for p in module.backbone.audio_tower.parameters()):
        module.backbone.audio_tower.eval()

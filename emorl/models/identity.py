"""What identifies a trained model, so that ``emorl test / validate / predict --ckpt_path`` never
evaluates another model than the user thinks without a word.

With ``--ckpt_path`` LightningCLI builds the checkpoint's module with the checkpoint's saved
hyper-parameters, over the config's model section (configs such as ``configs/emorl/meld_cross.yaml``
rely on it: one config tests every table row's checkpoint). :func:`identity_mismatches` compares
the two:

- **refused** (:attr:`Mismatches.refused`): another kind of model (an audio-language model, a
  probe, the acoustic baseline: :data:`KINDS`), or another base architecture (family and sizes
  from both models' ``config.json``, when both are on this machine);
- **said** (:attr:`Mismatches.replaced`): within one kind, what the checkpoint's values replace in
  the config: the module class, the prompt format, the trained-weight options (LoRA, full
  fine-tuning, a trained projector, the SFT task mix), a probe's encoder, layer and head, an
  acoustic baseline's network.

Everything else is portable and may differ silently (paths, dtype, devices, batch sizes, answer
lengths, the optimiser's settings). The trained weights' names and shapes are checked again when
they are loaded (:func:`emorl.models.checkpoints.check_trainable_weights`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: the kind of model of each module class: a checkpoint of one kind is never evaluated as another
KINDS = {
    "emorl.models.zeroshot.ZeroShotLALM": "audio-language model",
    "emorl.models.sft.SFTLALM": "audio-language model",
    "emorl.models.grpo.GRPOLALM": "audio-language model",
    "emorl.models.probe.LinearProbe": "probe",
    "emorl.models.acoustic.AcousticBaseline": "acoustic baseline",
}

#: init arguments that identify a model (those a module does not have are ignored)
IDENTITY_KEYS = ("prompt_format", "lora", "full_finetune", "train_projector", "tasks", "upstream", "layer",
                 "hidden_dim", "num_layers")

#: a base model's config.json fields that make its architecture (text and audio parts)
ARCHITECTURE_FIELDS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
                       "d_model", "encoder_layers")


def architecture_signature(model: str | None) -> dict[str, Any] | None:
    """The family and sizes of a base model (a zoo name or a folder), ``None`` when not on this machine."""
    if not model:
        return None
    try:
        from emorl.zoo import resolve

        config = json.loads((Path(resolve(model)) / "config.json").read_text(encoding="utf-8"))
    except (OSError, LookupError, ValueError):
        return None

    def fields(section: Mapping) -> dict[str, Any]:
        return {key: section[key] for key in ARCHITECTURE_FIELDS if key in section}

    signature = fields(config)
    for part in ("text_config", "audio_config", "thinker_config"):
        if isinstance(config.get(part), Mapping):
            signature[part] = fields(config[part])
    return signature


@dataclass
class Mismatches:
    """How a checkpoint's model differs from a config's: what refuses it, what it replaces."""

    refused: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)


def identity_mismatches(config_model: Mapping[str, Any], checkpoint_hparams: Mapping[str, Any]) -> Mismatches:
    """Compare the config's model (``{"class_path", "init_args"}``) with a checkpoint's saved
    hyper-parameters (with ``_class_path``) in what identifies a model."""
    found = Mismatches()
    saved_class, config_class = checkpoint_hparams.get("_class_path"), config_model.get("class_path")
    if saved_class and config_class and saved_class != config_class:
        saved_kind, config_kind = KINDS.get(saved_class, saved_class), KINDS.get(config_class, config_class)
        if saved_kind != config_kind:
            found.refused.append(f"{_article(saved_kind)} ({saved_class}) where the config has {_article(config_kind)} ({config_class})")
            return found
        found.replaced.append(f"module {saved_class} (config: {config_class})")
    init_args = dict(config_model.get("init_args") or {})
    for key in IDENTITY_KEYS:
        if key in init_args and key in checkpoint_hparams and _plain(init_args[key]) != _plain(checkpoint_hparams[key]):
            found.replaced.append(f"{key} {_plain(checkpoint_hparams[key])!r} (config: {_plain(init_args[key])!r})")
    saved, wanted = (architecture_signature(checkpoint_hparams.get("model")),
                     architecture_signature(init_args.get("model")))
    if saved is not None and wanted is not None and saved != wanted:
        found.refused.append(f"base model {checkpoint_hparams.get('model')} where the config has "
                             f"{init_args.get('model')}: another architecture or size")
    return found


def _plain(value: Any) -> Any:
    """Namespaces and mappings as plain dicts, so a parsed config compares with a checkpoint's values."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _article(kind: str) -> str:
    return ("an " if kind[0] in "aeiou" else "a ") + kind

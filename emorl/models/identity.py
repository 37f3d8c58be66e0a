"""What identifies a trained model, so that ``emorl test / validate / predict --ckpt_path`` refuses a
checkpoint of another model than the config's instead of quietly evaluating something else.

Identity (refused when it differs): the module class, the base model's family and sizes (read from
both models' ``config.json`` when both are on this machine), the prompt format, the trained-weight
options (LoRA, full fine-tuning, a trained projector, the SFT task mix), a probe's encoder, layer
and head, and an acoustic baseline's network. Everything else is portable and may differ (paths,
dtype, devices, batch sizes, answer lengths, the optimiser's settings). The trained weights'
names and shapes are checked again when they are loaded
(:func:`emorl.models.checkpoints.check_trainable_weights`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def identity_mismatches(config_model: Mapping[str, Any], checkpoint_hparams: Mapping[str, Any]) -> list[str]:
    """How the config's model (``{"class_path", "init_args"}``) and a checkpoint's saved hyper-parameters
    (with ``_class_path``) differ in what identifies a model; empty when they are the same model."""
    found = []
    saved_class = checkpoint_hparams.get("_class_path")
    config_class = config_model.get("class_path")
    if saved_class and config_class and saved_class != config_class:
        return [f"module {saved_class} (checkpoint) vs {config_class} (config)"]
    init_args = dict(config_model.get("init_args") or {})
    for key in IDENTITY_KEYS:
        if key in init_args and key in checkpoint_hparams and _plain(init_args[key]) != _plain(checkpoint_hparams[key]):
            found.append(f"{key} {_plain(checkpoint_hparams[key])!r} (checkpoint) vs {_plain(init_args[key])!r} (config)")
    saved, wanted = (architecture_signature(checkpoint_hparams.get("model")),
                     architecture_signature(init_args.get("model")))
    if saved is not None and wanted is not None and saved != wanted:
        found.append(f"base model {checkpoint_hparams.get('model')} (checkpoint) vs {init_args.get('model')} "
                     "(config): another architecture or size")
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

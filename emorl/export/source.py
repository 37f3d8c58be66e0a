"""What an export starts from: the run's config (which model, how it was trained) and its checkpoint.

The config's ``model:`` section names the base model and the training switches (LoRA options,
``train_projector``, ``full_finetune``); the checkpoint holds the trained weights (emorl keeps only
those: LoRA adapters, a trained projector; every language-model weight under full fine-tuning)
and the class names. Nothing here loads a model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

#: LightningModules whose checkpoints hold an audio-language backbone's weights.
EXPORTABLE = ("emorl.models.sft.SFTLALM", "emorl.models.grpo.GRPOLALM", "emorl.models.zeroshot.ZeroShotLALM")
#: LoRA options SFT and GRPO use when the config gives none (and full_finetune is off).
DEFAULT_LORA = {"r": 8, "alpha": 16, "dropout": 0.05}


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says why and what to do."""


@dataclass
class ExportSource:
    """A run to export: its config, checkpoint and what they say about the model."""

    config_path: Path
    config_text: str
    class_path: str
    init_args: dict[str, Any]
    class_names: list[str]
    checkpoint_path: Path | None
    trained: dict[str, torch.Tensor]

    @property
    def base_model(self) -> str:
        return str(self.init_args.get("model") or "qwen2-audio-7b-instruct")

    @property
    def full_finetune(self) -> bool:
        return bool(self.init_args.get("full_finetune"))

    @property
    def lora(self) -> dict | None:
        """The LoRA options the run trained with (``None``: full fine-tuning or zero-shot)."""
        if self.full_finetune or self.class_path.endswith("ZeroShotLALM"):
            return None
        return self.init_args.get("lora") or dict(DEFAULT_LORA)

    @property
    def train_projector(self) -> bool:
        return bool(self.init_args.get("train_projector"))

    @property
    def prompt_format(self) -> str:
        return str(self.init_args.get("prompt_format") or ("esr" if self.class_path.endswith("GRPOLALM") else "ir"))


def check_not_sharded(path: Path) -> None:
    """A folder checkpoint (DeepSpeed, FSDP / ModelParallelStrategy) must be consolidated first."""
    if path.is_dir():
        raise ExportError(
            f"{path} is a sharded checkpoint (a folder, as DeepSpeed and FSDP / ModelParallelStrategy "
            "save them); consolidate it into one file first:\n"
            f"  emorl checkpoint consolidate {path} --out {path.with_name(path.stem + '-full.ckpt')}   # emorl's FSDP2Strategy\n"
            "  python -c \"from lightning.pytorch.utilities.deepspeed import convert_zero_checkpoint_to_fp32_state_dict as c; "
            f"c('{path}', '{path}.consolidated')\"   # DeepSpeed\n"
            "then pass the resulting .ckpt file to --ckpt_path"
        )
    if not path.is_file():
        raise ExportError(f"checkpoint {path}: no such file")


def read_checkpoint(path: Path) -> dict:
    """A Lightning checkpoint file, on CPU, read with ``weights_only=True`` (a sharded folder is
    refused with the conversion to run; a file that is not a checkpoint, or one that would run code
    when unpickled, is an error)."""
    from emorl.models.checkpoints import read_checkpoint as read_safely

    check_not_sharded(path)
    return read_safely(path, "--ckpt_path")


def model_section(config: dict, config_path: Path) -> tuple[str, dict]:
    """``(class_path, init_args)`` of a config's ``model:`` section; other models are refused."""
    model = config.get("model") or {}
    class_path = model.get("class_path", "")
    if class_path not in EXPORTABLE:
        raise ExportError(
            f"{config_path}: model {class_path or '(none)'} is not an audio-language model; "
            f"emorl export writes Hugging Face folders of {', '.join(c.rsplit('.', 1)[1] for c in EXPORTABLE)} runs"
        )
    return class_path, dict(model.get("init_args") or {})


def trained_weights(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The backbone's weights in a checkpoint, keyed as in ``Backbone.model`` (``model.`` stripped)."""
    state = checkpoint.get("state_dict") or {}
    return {key[len("model."):]: value for key, value in state.items() if key.startswith("model.")}


def corpus_classes(data: dict) -> list[str] | None:
    """A zero-shot config's options: ``data.classes``, else the prepared corpus's label set (``corpus.json``)."""
    if data.get("classes"):
        return list(data["classes"])
    info = Path(str(data.get("data_dir", ""))) / "corpus.json"
    if data.get("data_dir") and info.is_file():
        return list(json.loads(info.read_text(encoding="utf-8")).get("classes") or []) or None
    return None


def load_source(config_path: str | Path, checkpoint_path: str | Path | None, base_model: str | None = None) -> ExportSource:
    """Read a config and a checkpoint into an :class:`ExportSource` (``base_model`` overrides the config's)."""
    config_path = Path(config_path)
    if not config_path.is_file():
        raise ExportError(f"config {config_path}: no such file")
    text = config_path.read_text(encoding="utf-8")
    config = yaml.safe_load(text) or {}
    class_path, init_args = model_section(config, config_path)
    if base_model:
        init_args["model"] = base_model
    checkpoint = read_checkpoint(Path(checkpoint_path)) if checkpoint_path else {}
    if checkpoint_path is None and not class_path.endswith("ZeroShotLALM"):
        raise ExportError(f"{class_path.rsplit('.', 1)[1]} is trained: pass its checkpoint with --ckpt_path")
    class_names = ((checkpoint.get("hyper_parameters") or {}).get("class_names") or init_args.get("class_names")
                   or corpus_classes(config.get("data") or {}))
    if not class_names:
        raise ExportError("no class names: neither the checkpoint's hyper-parameters, the config nor its "
                          "data_dir's corpus.json name them")
    return ExportSource(config_path=config_path, config_text=text, class_path=class_path, init_args=init_args,
                        class_names=list(class_names), checkpoint_path=Path(checkpoint_path) if checkpoint_path else None,
                        trained=trained_weights(checkpoint))

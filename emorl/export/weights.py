"""Trained weights onto the base model, LoRA merged in fp32, and the folder a serving engine loads.

The merged folder keeps the base checkpoint's layout: the same ``architectures`` (its
``config.json`` is the base's, only ``dtype`` changed and, for Omni, the talker switched off), the
same parameter names and shapes (transformers' ``save_pretrained`` writes its original checkpoint
names; Omni's thinker writes ``thinker.…`` as the full Omni checkpoint does), safetensors shards,
the base's ``generation_config.json`` and every processor / tokenizer / chat-template file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open

from emorl.export.source import ExportError, ExportSource

#: safetensors header dtype -> torch dtype.
SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
#: Files of a model folder that are not copied as processor files (weights, configs, cards).
NOT_PROCESSOR_FILES = {"config.json", "generation_config.json", "README.md", ".gitattributes",
                       "model.safetensors.index.json", "pytorch_model.bin.index.json", "spk_dict.pt"}
#: transformers' Qwen2.5-Omni image-processor settings (the hub folder's ``preprocessor_config.json``
#: holds them beside the feature extractor's); added when the base folder lacks them.
OMNI_IMAGE_PROCESSOR = {
    "image_processor_type": "Qwen2VLImageProcessor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "min_pixels": 3136, "max_pixels": 12845056,
    "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, "processor_class": "Qwen2_5OmniProcessor",
}


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a model folder (one file or the shards of an index)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{folder} has no safetensors weights")
    return files


def checkpoint_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """``{parameter name: shape}`` of a model folder's safetensors (headers only, no tensor read)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in weight_files(folder):
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def checkpoint_dtype(folder: Path) -> torch.dtype:
    """The floating dtype most of a model folder's tensors are stored in."""
    counts: dict[str, int] = {}
    for file in weight_files(folder):
        with safe_open(str(file), "pt") as handle:
            for key in handle.keys():
                name = handle.get_slice(key).get_dtype()
                counts[name] = counts.get(name, 0) + 1
    floating = {k: v for k, v in counts.items() if k in SAFETENSORS_DTYPES}
    return SAFETENSORS_DTYPES[max(floating, key=floating.get)] if floating else torch.float32


def load_trained(backbone, source: ExportSource) -> None:
    """Put the checkpoint's trained weights on the fp32 backbone; weights that do not fit are an error."""
    weights = source.trained
    own = backbone.model.state_dict()
    trainable = {name for name, p in backbone.model.named_parameters() if p.requires_grad}
    unknown = sorted(set(weights) - set(own))
    missing = sorted(trainable - set(weights))
    reshaped = [f"{k} {tuple(v.shape)} (model {tuple(own[k].shape)})" for k, v in weights.items()
                if k in own and tuple(own[k].shape) != tuple(v.shape)]
    if unknown or missing or reshaped:
        raise ExportError(
            f"the checkpoint's trained weights do not fit the config's model ({source.base_model}, "
            f"lora={source.lora}, train_projector={source.train_projector}, full_finetune={source.full_finetune}): "
            f"{len(missing)} missing, e.g. {missing[:2]}; {len(unknown)} unknown, e.g. {unknown[:2]}; "
            f"{len(reshaped)} of other shapes, e.g. {reshaped[:1]}. Pass the config the run was trained with "
            "(its run folder's config.yaml)"
        )
    params = dict(backbone.model.named_parameters())
    buffers = dict(backbone.model.named_buffers())
    with torch.no_grad():
        for name, value in weights.items():
            target = params.get(name, buffers.get(name))
            target.copy_(value.to(target.dtype))


def merged_model(backbone, dtype: torch.dtype) -> torch.nn.Module:
    """The transformers model with LoRA (and a trained projector copy) merged in fp32, then cast."""
    model = backbone.model
    if backbone.is_peft:
        if backbone.dtype != torch.float32:
            raise ExportError("LoRA is merged in float32: load the backbone in float32")
        model = model.merge_and_unload(safe_merge=True)
    return model.to(dtype).eval()


def export_config(base: Path, dtype: torch.dtype, family: str) -> dict:
    """The base's ``config.json`` with the export's dtype (and Omni's talker off: only the thinker is saved)."""
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    name = DTYPE_NAMES[dtype]
    config["dtype"] = name
    config.pop("torch_dtype", None)
    if family == "qwen2.5-omni":
        config["enable_audio_output"] = False
        if isinstance(config.get("thinker_config"), dict):
            config["thinker_config"]["dtype"] = name
    return config


def copy_processor_files(base: Path, out: Path, family: str) -> list[str]:
    """Copy the tokenizer / processor / chat-template files of the base folder; complete Omni's
    ``preprocessor_config.json`` with transformers' image-processor settings when it lacks them."""
    copied = []
    for path in sorted(base.iterdir()):
        if path.is_file() and path.name not in NOT_PROCESSOR_FILES and path.suffix not in (".safetensors", ".bin"):
            shutil.copy2(path, out / path.name)
            copied.append(path.name)
    preprocessor = out / "preprocessor_config.json"
    if family == "qwen2.5-omni" and preprocessor.is_file():
        settings = json.loads(preprocessor.read_text(encoding="utf-8"))
        if "image_processor_type" not in settings:
            preprocessor.write_text(json.dumps({**settings, **OMNI_IMAGE_PROCESSOR}, indent=2) + "\n", encoding="utf-8")
    return copied


def save_merged(model: torch.nn.Module, base: Path, out: Path, family: str, dtype: torch.dtype,
                max_shard_size: str = "5GB") -> None:
    """Write the merged model (safetensors shards), the base's config / generation config and processor files."""
    model.save_pretrained(out, max_shard_size=max_shard_size)
    config = export_config(base, dtype, family)
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if (base / "generation_config.json").is_file():
        shutil.copy2(base / "generation_config.json", out / "generation_config.json")
    copy_processor_files(base, out, family)
    check_same_layout(base, out)


def check_same_layout(base: Path, out: Path) -> None:
    """The exported folder's parameter names and shapes equal the base checkpoint's (the thinker's, for Omni)."""
    base_shapes = checkpoint_shapes(base)
    exported = checkpoint_shapes(out)
    if any(k.startswith("thinker.") for k in exported):  # the full Omni checkpoint: compare the thinker
        base_shapes = {k: v for k, v in base_shapes.items() if k.startswith("thinker.")}
    if base_shapes != exported:
        extra, lost = sorted(set(exported) - set(base_shapes)), sorted(set(base_shapes) - set(exported))
        reshaped = sorted(k for k in set(exported) & set(base_shapes) if exported[k] != base_shapes[k])
        raise ExportError(f"the exported weights do not match the base checkpoint's layout: extra {extra[:3]}, "
                          f"missing {lost[:3]}, reshaped {reshaped[:3]}")


def save_adapter(backbone, base: Path, out: Path, family: str) -> None:
    """The PEFT adapter folder (``adapter_config.json``, ``adapter_model.safetensors``) and processor files."""
    if not backbone.is_peft:
        raise ExportError("--adapter needs a LoRA run; this run trained the weights themselves "
                          "(full fine-tuning): export the merged folder (without --adapter)")
    backbone.model.save_pretrained(out)
    copy_processor_files(base, out, family)

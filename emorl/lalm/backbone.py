"""Audio-language backbones: loading, LoRA / full fine-tuning switches, trainable weights.

    from emorl.lalm import load_backbone
    backbone = load_backbone("qwen2-audio-7b-instruct", dtype="bfloat16",
                             lora={"r": 8, "alpha": 16, "dropout": 0.05})

Two families (``Backbone.family``):

* ``qwen2-audio``: ``Qwen2AudioForConditionalGeneration`` (``Qwen/Qwen2-Audio-7B-Instruct``);
  projector = ``model.multi_modal_projector``.
* ``qwen2.5-omni``: the *thinker* of ``Qwen/Qwen2.5-Omni-7B`` (audio in, text out), loaded as
  ``Qwen2_5OmniThinkerForConditionalGeneration`` straight from the full Omni checkpoint: its
  ``config.json`` is the composite Omni config (the thinker's part is picked out) and its weights
  are keyed ``thinker.…``; ``key_mapping`` strips that prefix, so only the thinker is built and
  only its tensors are read (``talker.…`` / ``token2wav.…`` are never materialised). Projector =
  the audio encoder's last linear layer ``audio_tower.proj`` (Omni has no separate projector).

A name is resolved through :func:`emorl.zoo.resolve` (a folder, ``$EMORL_MODELS/<name>``, the HF
cache); a missing model raises :class:`emorl.zoo.ModelNotAvailableError` saying how to get it.
Nothing is downloaded.

Training switches: the audio tower is frozen by default (Qwen2.5-Omni's vision tower always is).
``lora=`` wraps the language model with peft LoRA adapters (only the language model's linear
layers are targeted, never the audio tower's, even where names clash such as ``q_proj``); with
``train_projector=True`` the projector is trained too (as a peft ``modules_to_save`` copy, so
:meth:`Backbone.adapter_disabled` still gives the untouched base model). ``full_finetune=True``
trains the language model, its head and the projector.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from transformers import Qwen2_5OmniProcessor
from transformers.processing_utils import ProcessorMixin

FAMILIES = ("qwen2-audio", "qwen2.5-omni")
#: config.json ``model_type`` -> family.
MODEL_TYPES = {
    "qwen2_audio": "qwen2-audio",
    "qwen2_5_omni": "qwen2.5-omni",
    "qwen2_5_omni_thinker": "qwen2.5-omni",
}
#: Default LoRA targets: every linear layer of the language model's blocks.
#: The LoRA options SFT and GRPO use when a config sets neither ``lora`` nor ``full_finetune``.
DEFAULT_LORA = {"r": 8, "alpha": 16, "dropout": 0.05}
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
#: Loads the Omni thinker out of the full Omni checkpoint (weights keyed ``thinker.…``).
OMNI_KEY_MAPPING = {r"^thinker\.": ""}


class BackboneError(ValueError):
    """A folder that is not a model of a supported family, or options that do not fit together."""


class OmniAudioProcessor(Qwen2_5OmniProcessor):
    """``Qwen2_5OmniProcessor`` for audio and text only: no image / video processors.

    The full processor needs torchvision (its video processor); emorl's path is audio-only, so when
    torchvision is missing the Omni processor is built from the tokenizer, the feature extractor
    and the chat template. Audio and text are processed by the very same code.
    """

    def __init__(self, feature_extractor=None, tokenizer=None, chat_template=None):
        ProcessorMixin.__init__(self, feature_extractor, tokenizer, chat_template=chat_template)
        for name in ("image_token", "audio_token", "video_token", "image_token_id", "audio_token_id",
                     "video_token_id", "vision_bos_token", "vision_eos_token", "audio_bos_token", "audio_eos_token"):
            setattr(self, name, getattr(tokenizer, name))

    @property
    def model_input_names(self):
        names = self.tokenizer.model_input_names + self.feature_extractor.model_input_names
        return list(dict.fromkeys(names + ["feature_attention_mask"]))


@dataclass
class Backbone:
    """A loaded audio-language model with its processor.

    ``model`` is what to optimise (a peft ``PeftModel`` under LoRA, else the transformers model);
    ``hf_model`` is the transformers model inside (forward / generate; LoRA layers live in it).
    """

    model: nn.Module
    processor: Any
    family: str
    path: Path | None = None
    lora: dict | None = None
    train_projector: bool = False
    full_finetune: bool = False
    options: dict = field(default_factory=dict)

    # -- parts -------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @property
    def hf_model(self) -> nn.Module:
        return self.model.get_base_model() if self.is_peft else self.model

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config") and hasattr(self.model, "get_base_model")

    @property
    def audio_tower(self) -> nn.Module:
        return self.hf_model.model.audio_tower

    @property
    def projector(self) -> nn.Module:
        """The audio -> text-width projection (Omni: ``audio_tower.proj``)."""
        inner = self.hf_model.model
        if self.family == "qwen2-audio":
            return inner.multi_modal_projector
        return inner.audio_tower.proj

    @property
    def language_model(self) -> nn.Module:
        return self.hf_model.model.language_model

    @property
    def config(self):
        return self.hf_model.config

    @property
    def audio_token_id(self) -> int:
        config = self.config
        return int(getattr(config, "audio_token_id", None) or config.audio_token_index)

    @property
    def pad_token_id(self) -> int:
        tokenizer = self.tokenizer
        return int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end an answer: the checkpoint's generation eos ids, ``<|im_end|>``, ``<|endoftext|>``."""
        ids: list[int] = []
        configured = getattr(self.hf_model.generation_config, "eos_token_id", None)
        ids += configured if isinstance(configured, list) else ([configured] if configured is not None else [])
        for token in ("<|im_end|>", "<|endoftext|>"):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != self.tokenizer.unk_token_id:
                ids.append(token_id)
        return list(dict.fromkeys(int(i) for i in ids))

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.language_model.get_input_embeddings().weight.dtype

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the forward passes run in (the loaded ``dtype``), whatever the weights' own dtype."""
        return DTYPES.get(str(self.options.get("dtype", "")), self.dtype)

    @property
    def sharded(self) -> bool:
        """Whether the model went through FSDP2 (:mod:`emorl.lalm.sharding`)."""
        from emorl.lalm.sharding import is_sharded

        return is_sharded(self.hf_model)

    def autocast(self):
        """The compute context of every forward pass: autocast to :attr:`compute_dtype` when the
        trained weights are fp32 masters of a lower-precision model on one device or under DDP
        (:meth:`use_fp32_masters`); nothing otherwise (FSDP's mixed-precision policy casts)."""
        if not self.options.get("fp32_masters") or self.sharded or self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def use_fp32_masters(self) -> int:
        """Trainable weights to float32 (the frozen ones keep the loaded dtype); forward passes then
        run under :meth:`autocast`. Full fine-tuning on one device / DDP (FSDP casts per unit as it
        shards). Returns how many tensors were cast."""
        from emorl.lalm.sharding import cast_trainable_to_fp32

        self.options["fp32_masters"] = True
        return cast_trainable_to_fp32(self.model)

    def gathered(self):
        """The block in which a sharded model stays gathered (:func:`emorl.lalm.sharding.unsharded`:
        one all-gather per unit, e.g. for a whole rollout); a no-op when not sharded."""
        from emorl.lalm.sharding import unsharded

        return unsharded(self.hf_model)

    def input_embeddings(self) -> nn.Module:
        return self.hf_model.get_input_embeddings()

    # -- trainable weights -------------------------------------------------------------------
    def trainable_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        return ((name, p) for name, p in self.model.named_parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the trained weights (LoRA adapters, the projector if trained; all of them under
        full fine-tuning), detached copies on CPU, keyed as in ``self.model``."""
        return {name: p.detach().to("cpu", copy=True) for name, p in self.trainable_parameters()}

    def load_trainable_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` returned; a key that is not a trainable weight
        of this backbone, or a trainable weight left out, is an error."""
        trainable = {name for name, _ in self.trainable_parameters()}
        unknown = sorted(set(state_dict) - trainable)
        missing = sorted(trainable - set(state_dict))
        if unknown or missing:
            raise BackboneError(
                f"trainable weights do not match this backbone (LoRA / projector options differ?): "
                f"{len(unknown)} unknown keys {unknown[:3]}, {len(missing)} missing keys {missing[:3]}"
            )
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state_dict.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))

    @contextlib.contextmanager
    def adapter_disabled(self):
        """The base model inside the block: LoRA adapters (and trained projector copies) switched off.

        GRPO's KL reference under LoRA, without a second copy of the weights. Without LoRA there
        is no base model to fall back to (full fine-tuning changes the weights themselves): error.
        """
        if not self.is_peft:
            raise BackboneError(
                "adapter_disabled() needs a LoRA backbone; under full fine-tuning keep a separate, "
                "frozen reference model (load_backbone(...) a second time)"
            )
        with self.model.disable_adapter():
            yield self


# -- loading ---------------------------------------------------------------------------------
def detect_family(path: str | os.PathLike) -> str:
    """The family of a model folder, from its ``config.json``; a clear error for anything else."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise BackboneError(f"{path} is not a transformers model folder (no config.json)")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    model_type = config.get("model_type", "")
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    raise BackboneError(
        f"{path} holds a {model_type or 'unknown'!r} model ({', '.join(config.get('architectures') or []) or 'no architectures'}); "
        f"emorl's audio-language backbones are Qwen2-Audio (model_type qwen2_audio, e.g. "
        f"Qwen/Qwen2-Audio-7B-Instruct) and Qwen2.5-Omni (model_type qwen2_5_omni, e.g. Qwen/Qwen2.5-Omni-7B)"
    )


def _resolve(name_or_path: str | os.PathLike) -> Path:
    from emorl.zoo import resolve

    return Path(resolve(name_or_path))


def load_processor(path: Path, family: str):
    """The family's processor, read from the folder (left padding for batched generation)."""
    from transformers import AutoProcessor

    if family == "qwen2.5-omni":
        try:
            processor = AutoProcessor.from_pretrained(path)
        except (ImportError, ValueError, AttributeError, TypeError):  # no torchvision: audio-only processor
            from transformers import AutoTokenizer, WhisperFeatureExtractor

            tokenizer = AutoTokenizer.from_pretrained(path)
            processor = OmniAudioProcessor(
                WhisperFeatureExtractor.from_pretrained(path), tokenizer, chat_template=_chat_template(path, tokenizer)
            )
    else:
        processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    if getattr(processor, "chat_template", None) is None:
        processor.chat_template = processor.tokenizer.chat_template
    return processor


def _chat_template(path: Path, tokenizer) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
    return tokenizer.chat_template


def _lora_target_regex(targets) -> str:
    """peft target: only linear layers inside the language model (audio/vision towers share names)."""
    if isinstance(targets, str):
        return targets  # a user regex, used as is
    names = "|".join(re.escape(t) for t in targets)
    return rf"^(?:.*\.)?language_model\..*\.(?:{names})$"


def load_backbone(
    name_or_path: str | os.PathLike,
    dtype: str | torch.dtype = "float32",
    attn_implementation: str | None = "sdpa",
    gradient_checkpointing: bool = False,
    lora: dict | None = None,
    train_projector: bool = False,
    full_finetune: bool = False,
    freeze_audio_tower: bool = True,
    device: str | torch.device | None = None,
) -> Backbone:
    """Load a Qwen2-Audio or Qwen2.5-Omni-thinker backbone with its processor.

    ``name_or_path``: a zoo name (``qwen2-audio-7b-instruct``, ``qwen2.5-omni-7b-thinker``), a hub
    id of the zoo or a local folder. ``dtype``: ``float32`` | ``bfloat16`` | ``float16``.
    ``attn_implementation``: ``sdpa`` | ``eager`` | ``flash_attention_2``. ``lora``: ``{"r": 8,
    "alpha": 16, "dropout": 0.05, "target_modules": [...]}`` (names inside the language model, or
    one regex string). With neither ``lora`` nor ``full_finetune`` everything is frozen (evaluation).
    """
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Qwen2AudioForConditionalGeneration

    if lora is not None and full_finetune:
        raise BackboneError("choose LoRA or full fine-tuning, not both")
    if isinstance(dtype, str) and dtype not in DTYPES:
        raise BackboneError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    path = _resolve(name_or_path)
    family = detect_family(path)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if family == "qwen2-audio":
        model = Qwen2AudioForConditionalGeneration.from_pretrained(path, **kwargs)
    else:
        model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
            path, key_mapping=OMNI_KEY_MAPPING, **kwargs
        )
    processor = load_processor(path, family)
    if device is not None:
        model.to(device)

    backbone = Backbone(model=model, processor=processor, family=family, path=path, lora=lora,
                        train_projector=train_projector, full_finetune=full_finetune,
                        options={"dtype": str(torch_dtype).replace("torch.", ""),
                                 "attn_implementation": attn_implementation,
                                 "gradient_checkpointing": gradient_checkpointing})
    _set_trainable(backbone, lora, train_projector, full_finetune, freeze_audio_tower)
    if gradient_checkpointing:
        hf_model = backbone.hf_model  # transformers >= 5.x renames it activation_checkpointing_enable
        if hasattr(hf_model, "activation_checkpointing_enable"):
            hf_model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.eval()  # dropout off until a trainer says otherwise
    return backbone


def _projector_name(family: str) -> str:
    return "multi_modal_projector" if family == "qwen2-audio" else "audio_tower.proj"


def _set_trainable(backbone: Backbone, lora, train_projector: bool, full_finetune: bool, freeze_audio_tower: bool):
    model = backbone.model
    model.requires_grad_(False)
    if full_finetune:
        backbone.language_model.requires_grad_(True)
        backbone.hf_model.lm_head.requires_grad_(True)
        backbone.projector.requires_grad_(True)
    elif lora is not None:
        from peft import LoraConfig, get_peft_model

        unknown = set(lora) - {"r", "alpha", "dropout", "target_modules", "lora_alpha", "lora_dropout"}
        if unknown:
            raise BackboneError(f"unknown LoRA options {sorted(unknown)} (r, alpha, dropout, target_modules)")
        config = LoraConfig(
            r=int(lora.get("r", 8)),
            lora_alpha=int(lora.get("alpha", lora.get("lora_alpha", 16))),
            lora_dropout=float(lora.get("dropout", lora.get("lora_dropout", 0.05))),
            target_modules=_lora_target_regex(lora.get("target_modules") or DEFAULT_LORA_TARGETS),
            modules_to_save=[_projector_name(backbone.family)] if train_projector else None,
            bias="none",
        )
        backbone.model = get_peft_model(model, config)
    elif train_projector:
        backbone.projector.requires_grad_(True)
    if not freeze_audio_tower:
        backbone.audio_tower.requires_grad_(True)

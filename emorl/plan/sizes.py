"""A model's architecture sizes and parameter counts, without its weights (nor torch).

    arch = architecture_of("qwen2-audio-7b-instruct")   # a zoo name: the card's ``sizes`` block
    arch = architecture_of("/models/my-qwen2-audio")     # a folder: its config.json
    arch.total, arch.counts["lm_head"], arch.text.kv_bytes_per_token(2)

Parameter counts follow the module shapes of transformers' Qwen2 decoder (q/k/v with bias, o,
gate/up/down without), Qwen2-Audio's Whisper-style encoder (learned positions, projector
``width -> hidden``), Qwen2.5-Omni's audio encoder (sinusoidal positions, ``ln_post`` and ``proj``
inside it) and its Qwen2.5-VL vision tower; ``tests/test_plan.py`` checks them against the
instantiated tiny models and the published totals (8.4 B, 7.62 B).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from emorl.errors import EmorlError


class PlanError(EmorlError):
    """A config, model or option ``emorl plan`` cannot read (one line, exit status 2)."""


@dataclass(frozen=True)
class TextSizes:
    """A Qwen2-style decoder: ``layers`` blocks of GQA attention (``kv_heads`` x ``head_dim``) + SwiGLU."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False

    def layer_parameters(self) -> int:
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        attention = (h * q + q) + 2 * (h * kv + kv) + q * h
        return attention + 3 * h * i + 2 * h

    def lora_parameters(self, r: int, targets: tuple[str, ...]) -> int:
        """LoRA adapter weights (A: r x in, B: out x r) on ``targets`` of every decoder layer."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                  "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        unknown = sorted(set(targets) - set(shapes))
        if unknown:
            raise PlanError(f"LoRA target_modules {unknown} are not decoder linear layers ({', '.join(shapes)})")
        return self.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """Keys + values of one token over every layer."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


@dataclass(frozen=True)
class AudioSizes:
    """The audio encoder: two convolutions (stride 2: 3000 mel frames -> 1500 positions), ``layers``
    Whisper blocks; ``learned_positions`` (Qwen2-Audio) or sinusoidal + ``ln_post`` (Qwen2.5-Omni)."""

    layers: int
    width: int
    heads: int
    ffn: int
    mel_bins: int = 128
    positions: int = 1500
    learned_positions: bool = True

    def layer_parameters(self) -> int:
        w, f = self.width, self.ffn
        return w * w + 3 * (w * w + w) + 4 * w + (w * f + f) + (f * w + w)

    def tower_parameters(self) -> int:
        w = self.width
        convs = (w * self.mel_bins * 3 + w) + (w * w * 3 + w)
        positions = self.positions * w if self.learned_positions else 0
        return convs + positions + self.layers * self.layer_parameters() + 2 * w


@dataclass(frozen=True)
class VisionSizes:
    """Qwen2.5-Omni's vision tower (Qwen2.5-VL's): built and loaded with the thinker, never run by emorl."""

    depth: int
    hidden: int
    intermediate: int
    heads: int
    patch: int = 14
    temporal_patch: int = 2
    in_channels: int = 3
    merge: int = 2

    def parameters(self, out: int) -> int:
        v, i, m = self.hidden, self.intermediate, self.hidden * self.merge ** 2
        patch = v * self.in_channels * self.temporal_patch * self.patch ** 2
        block = 2 * v + 4 * (v * v + v) + 2 * (v * i + i) + (i * v + v)
        return patch + self.depth * block + v + (m * m + m) + (m * out + out)


@dataclass(frozen=True)
class Architecture:
    """Sizes of one model; ``counts`` holds the parameters of each part (see :func:`parameter_counts`)."""

    name: str
    family: str  # qwen2-audio | qwen2.5-omni | textlm
    text: TextSizes
    audio: AudioSizes | None = None
    vision: VisionSizes | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def parameter_counts(family: str, text: TextSizes, audio: AudioSizes | None, vision: VisionSizes | None) -> dict[str, int]:
    """Parameters per part: ``language_model`` (embeddings, decoder layers, final norm), ``lm_head``
    (0 when tied), ``audio_tower`` (frozen part), ``projector`` (audio -> text), ``vision_tower``."""
    counts = {
        "language_model": text.vocab * text.hidden + text.layers * text.layer_parameters() + text.hidden,
        "lm_head": 0 if text.tied_embeddings else text.vocab * text.hidden,
    }
    if audio is not None:
        counts["audio_tower"] = audio.tower_parameters() + (0 if family == "qwen2-audio" else 2 * text.hidden)
        counts["projector"] = audio.width * text.hidden + text.hidden
    if vision is not None:
        counts["vision_tower"] = vision.parameters(text.hidden)
    return counts


def _build(name: str, family: str, text: dict, audio: dict | None, vision: dict | None) -> Architecture:
    text_sizes = TextSizes(**text)
    audio_sizes = AudioSizes(**audio, learned_positions=family == "qwen2-audio") if audio else None
    vision_sizes = VisionSizes(**vision) if vision else None
    return Architecture(name, family, text_sizes, audio_sizes, vision_sizes,
                        parameter_counts(family, text_sizes, audio_sizes, vision_sizes))


# -- from a zoo card --------------------------------------------------------------------------------
_CARD_FAMILIES = {"qwen2-audio": "qwen2-audio", "qwen2.5-omni": "qwen2.5-omni", "textlm": "textlm"}


def from_card(card) -> Architecture:
    """The architecture of a zoo card's ``sizes`` block (published config.json values)."""
    sizes = card.sizes or {}
    if "text" not in sizes:
        raise PlanError(f"zoo card {card.name!r} has no `sizes` block (emorl plan covers the audio-language "
                        "models and text LMs of the zoo)")
    try:
        return _build(card.name, _CARD_FAMILIES[card.backend], dict(sizes["text"]), sizes.get("audio"),
                      sizes.get("vision"))
    except (KeyError, TypeError) as err:
        raise PlanError(f"zoo card {card.name!r}: unreadable `sizes` block ({err})") from None


# -- from a transformers config.json ----------------------------------------------------------------
def _text_from_config(config: dict) -> dict:
    heads = int(config["num_attention_heads"])
    return {
        "layers": int(config["num_hidden_layers"]), "hidden": int(config["hidden_size"]), "heads": heads,
        "kv_heads": int(config.get("num_key_value_heads") or heads),
        "head_dim": int(config.get("head_dim") or int(config["hidden_size"]) // heads),
        "intermediate": int(config["intermediate_size"]), "vocab": int(config["vocab_size"]),
        "tied_embeddings": bool(config.get("tie_word_embeddings", False)),
    }


def _audio_from_config(config: dict) -> dict:
    return {"layers": int(config["encoder_layers"]), "width": int(config["d_model"]),
            "heads": int(config["encoder_attention_heads"]), "ffn": int(config["encoder_ffn_dim"]),
            "mel_bins": int(config.get("num_mel_bins", 128)), "positions": int(config.get("max_source_positions", 1500))}


def _vision_from_config(config: dict) -> dict:
    return {"depth": int(config["depth"]), "hidden": int(config["hidden_size"]),
            "intermediate": int(config["intermediate_size"]), "heads": int(config["num_heads"]),
            "patch": int(config.get("patch_size", 14)), "temporal_patch": int(config.get("temporal_patch_size", 2)),
            "in_channels": int(config.get("in_channels", 3)), "merge": int(config.get("spatial_merge_size", 2))}


def from_config_json(path: Path) -> Architecture:
    """The architecture of a local model folder (Qwen2-Audio, a Qwen2.5-Omni checkpoint or thinker,
    a plain Qwen2 / Llama-style text LM) read from its ``config.json``."""
    file = Path(path) / "config.json"
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except OSError:
        raise PlanError(f"model folder {path} has no readable config.json") from None
    except ValueError as err:
        raise PlanError(f"{file} is not valid JSON ({err})") from None
    config = config.get("thinker_config", config)
    try:
        if "audio_config" in config and config.get("model_type") == "qwen2_audio":
            return _build(str(path), "qwen2-audio", _text_from_config(config["text_config"]),
                          _audio_from_config(config["audio_config"]), None)
        if "audio_config" in config:
            vision = config.get("vision_config")
            return _build(str(path), "qwen2.5-omni", _text_from_config(config["text_config"]),
                          _audio_from_config(config["audio_config"]), _vision_from_config(vision) if vision else None)
        return _build(str(path), "textlm", _text_from_config(config.get("text_config", config)), None, None)
    except (KeyError, TypeError, ValueError) as err:
        raise PlanError(f"{file}: not a Qwen2-Audio / Qwen2.5-Omni / Qwen2-style config (missing {err})") from None


def architecture_of(name_or_path: str) -> Architecture:
    """A zoo name (or hub id), a zoo name written as a folder's last part (``models/Qwen2.5-7B-Instruct``
    when that folder is not here), or an existing folder with a config.json."""
    from emorl import zoo

    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        return from_config_json(path)
    cards = zoo.list_cards()
    wanted = str(name_or_path).strip().lower()
    for card in cards:
        if wanted in (card.name.lower(), card.hub_id.lower()) or path.name.lower() in (
                card.name.lower(), card.hub_id.split("/")[-1].lower()):
            return from_card(card)
    known = ", ".join(c.name for c in cards if c.sizes)
    raise PlanError(f"model {name_or_path!r} is neither a folder with a config.json nor a zoo model with "
                    f"published sizes ({known})")

"""Tiny randomly initialised audio-language models, saved like the real checkpoints.

``emorl zoo tiny qwen2-audio-7b-instruct --out DIR`` (or ``qwen2.5-omni-7b-thinker``) calls
:func:`build_tiny`. What it writes loads through :func:`emorl.lalm.load_backbone` exactly as the
real checkpoint does:

* **qwen2-audio**: a ``Qwen2AudioForConditionalGeneration`` (``config.json``,
  ``model.safetensors``, ``generation_config.json``) with a ``Qwen2AudioProcessor``.
* **qwen2.5-omni**: a full ``Qwen2_5OmniForConditionalGeneration`` checkpoint with the talker
  switched off (``enable_audio_output: false``), so its weights are keyed ``thinker.…`` as on the
  hub and its ``config.json`` is the composite Omni config: the loader has to pick out the thinker
  exactly as it does for ``Qwen/Qwen2.5-Omni-7B``. With a ``Qwen2_5OmniProcessor`` (the image
  processor is the PIL one; the video processor needs torchvision and is left out when it is
  missing, which the audio-only path never uses).

Both keep what matters for the audio path: the Whisper-style encoder with 128 mel bins, the real
convolution strides and pooling and ``max_source_positions: 1500`` (30 s -> 750 audio tokens, 25 per
second, as in the real models), the real special tokens, the real chat templates (data strings
copied from the hub checkpoints) and a ``WhisperFeatureExtractor(feature_size=128)``. Sizes (2
layers, hidden 64, audio width 32) come from the zoo card's ``tiny:`` block.

The tokenizer is a byte-level BPE (the Qwen2 pre-tokenizer) trained on the spot on a small
generated corpus of emotion words, prompt phrases and ``<think>``/``<answer>`` tags, so a tiny
model can learn short answers in a few SFT steps.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Chat template of ``Qwen/Qwen2-Audio-7B-Instruct`` (its tokenizer_config.json). Audio parts are
#: recognised by an ``audio`` or ``audio_url`` key, not by ``type`` alone (emorl.lalm.inputs adds one).
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and "
    "message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if 'audio' in content or "
    "'audio_url' in content %}{% set audio_count.value = audio_count.value + 1 %}Audio "
    "{{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n{% elif 'text' in content %}"
    "{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Chat template of ``Qwen/Qwen2.5-Omni-7B`` (its chat_template.json).
QWEN2_5_OMNI_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}{% set image_count = namespace(value=0) %}"
    "{% set video_count = namespace(value=0) %}{% for message in messages %}{% if loop.first and "
    "message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' or "
    "'image' in content or 'image_url' in content %}{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_bos|><|IMAGE|><|vision_eos|>"
    "{% elif content['type'] == 'audio' or 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}{% if add_audio_id %}Audio {{ audio_count.value }}: "
    "{% endif %}<|audio_bos|><|AUDIO|><|audio_eos|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|vision_bos|><|VIDEO|><|vision_eos|>{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}"
    "<|im_start|>assistant\n{% endif %}"
)

#: Special tokens, in the real checkpoints' order (ids 151643... there; right after the BPE vocab here).
SPECIAL_TOKENS = {
    "qwen2-audio": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"],
    "qwen2.5-omni": [
        "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>",
        "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_bos|>", "<|vision_eos|>",
        "<|vision_pad|>", "<|IMAGE|>", "<|VIDEO|>",
    ],
}
#: Named special tokens the processors read from the tokenizer (tokenizer.audio_token, ...).
NAMED_TOKENS = {
    "qwen2-audio": {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"},
    "qwen2.5-omni": {
        "audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
        "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>",
        "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>",
    },
}
CHAT_TEMPLATES = {"qwen2-audio": QWEN2_AUDIO_CHAT_TEMPLATE, "qwen2.5-omni": QWEN2_5_OMNI_CHAT_TEMPLATE}

#: Default tiny sizes (a card's ``tiny:`` block overrides any of them).
DEFAULT_SIZES: dict[str, Any] = {
    "vocab_size": 640,             # BPE merges trained on the corpus below (+ the special tokens)
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "audio_d_model": 32,
    "audio_layers": 2,
    "audio_heads": 2,
    "audio_ffn_dim": 64,
}

EMOTION_WORDS = [
    "neutral", "calm", "happy", "joy", "sad", "sadness", "angry", "anger", "fear", "fearful",
    "disgust", "surprise", "surprised", "frustrated", "excited", "contempt", "other",
]


def training_corpus() -> list[str]:
    """Short texts of the kind emorl prompts and answers are made of (deterministic)."""
    tags = ["<think>", "</think>", "<answer>", "</answer>", "<transcript>", "</transcript>",
            "<keywords>", "</keywords>", "<prosody>", "</prosody>", "<summary>", "</summary>"]
    phrases = [
        "What is the emotion of the speaker in this audio?",
        "Choose one of the following options:",
        "Answer with one word inside <answer></answer>.",
        "Think step by step inside <think></think>, then answer inside <answer></answer>.",
        "The pitch is high, the speaking rate is fast and the voice is loud.",
        "The pitch is low, the rhythm is slow and the volume is soft.",
        "The speaker says the words calmly; the tone suggests",
        "You are a helpful assistant.",
    ]
    lines = []
    for i, word in enumerate(EMOTION_WORDS):
        other = EMOTION_WORDS[(i + 3) % len(EMOTION_WORDS)]
        lines += [
            f"<answer>{word}</answer>",
            f"<think>The voice sounds {word}, not {other}.</think><answer>{word}</answer>",
            f"Options: {word}, {other}. The emotion is {word}.",
            f"{word.capitalize()} {word} {word.upper()}",
        ]
    lines += phrases + [" ".join(tags), ", ".join(EMOTION_WORDS)]
    return lines * 4


def train_tokenizer(family: str, vocab_size: int = DEFAULT_SIZES["vocab_size"]):
    """A ``Qwen2Tokenizer`` (byte-level BPE) trained now, carrying the family's special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    specials = SPECIAL_TOKENS[family]
    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(training_corpus(), trainer)
    model = json.loads(backend.to_str())["model"]
    vocab = dict(model["vocab"])
    for token in specials:  # after the BPE vocab, in the real order
        vocab[token] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=dict(NAMED_TOKENS[family]),
        model_max_length=32768,
    )
    tokenizer.add_special_tokens({"extra_special_tokens": specials}, replace_extra_special_tokens=False)
    tokenizer.padding_side = "left"
    tokenizer.chat_template = CHAT_TEMPLATES[family]
    return tokenizer


def feature_extractor():
    """Whisper-large-v3's front end: 128 mel bins, 16 kHz, 10 ms hop, 30 s window."""
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor(
        feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
        padding_value=0.0, return_attention_mask=True,
    )


def _audio_config(sizes: dict[str, Any]) -> dict[str, Any]:
    return {
        "d_model": sizes["audio_d_model"], "encoder_layers": sizes["audio_layers"],
        "encoder_attention_heads": sizes["audio_heads"], "encoder_ffn_dim": sizes["audio_ffn_dim"],
        "num_mel_bins": 128, "max_source_positions": 1500,
    }


def _text_config(sizes: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    return {
        "hidden_size": sizes["hidden_size"], "intermediate_size": sizes["intermediate_size"],
        "num_hidden_layers": sizes["num_hidden_layers"], "num_attention_heads": sizes["num_attention_heads"],
        "num_key_value_heads": sizes["num_key_value_heads"], "vocab_size": vocab_size,
        "max_position_embeddings": 4096,
    }


def _build_qwen2_audio(tokenizer, sizes):
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS["qwen2-audio"]}
    text = _text_config(sizes, len(tokenizer))
    text.update(model_type="qwen2", tie_word_embeddings=False, pad_token_id=ids["<|endoftext|>"],
                bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    config = Qwen2AudioConfig(
        audio_config={"model_type": "qwen2_audio_encoder", **_audio_config(sizes)},
        text_config=text,
        audio_token_index=ids["<|AUDIO|>"],
    )
    model = Qwen2AudioForConditionalGeneration(config)
    processor = Qwen2AudioProcessor(
        feature_extractor=feature_extractor(), tokenizer=tokenizer, chat_template=QWEN2_AUDIO_CHAT_TEMPLATE
    )
    return model, processor, ids


def _build_qwen2_5_omni(tokenizer, sizes):
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration, Qwen2_5OmniProcessor

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS["qwen2.5-omni"]}
    audio = _audio_config(sizes)
    audio.update(n_window=100, output_dim=sizes["hidden_size"])
    text = _text_config(sizes, len(tokenizer))
    text.update(tie_word_embeddings=False, pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"])
    # 3-D rope: the real split [16, 24, 24] of head_dim / 2 = 64, scaled to the tiny head_dim / 2
    half = sizes["hidden_size"] // sizes["num_attention_heads"] // 2
    section = [half * 2 // 8, half * 3 // 8]
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0,
                               "mrope_section": section + [half - sum(section)]}
    thinker = {
        "audio_config": audio,
        "vision_config": {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                          "out_hidden_size": sizes["hidden_size"], "fullatt_block_indexes": [0]},
        "text_config": text,
        "audio_token_index": ids["<|AUDIO|>"], "image_token_index": ids["<|IMAGE|>"],
        "video_token_index": ids["<|VIDEO|>"], "audio_start_token_id": ids["<|audio_bos|>"],
        "audio_end_token_id": ids["<|audio_eos|>"], "vision_start_token_id": ids["<|vision_bos|>"],
        "vision_end_token_id": ids["<|vision_eos|>"], "pad_token_id": ids["<|endoftext|>"],
    }
    # The talker and token2wav are never built (enable_audio_output: false); their configs keep the
    # defaults so config.json has the real composite layout.
    # talker vocab_size only silences transformers' range check of the talker's default token ids
    config = Qwen2_5OmniConfig(thinker_config=thinker, talker_config={"vocab_size": 152064}, enable_audio_output=False)
    model = Qwen2_5OmniForConditionalGeneration(config)
    try:  # the full processor needs torchvision (its video processor)
        from transformers import Qwen2VLImageProcessor
        from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

        processor = Qwen2_5OmniProcessor(
            image_processor=Qwen2VLImageProcessor(), video_processor=Qwen2VLVideoProcessor(),
            feature_extractor=feature_extractor(), tokenizer=tokenizer, chat_template=QWEN2_5_OMNI_CHAT_TEMPLATE,
        )
    except ImportError:
        from emorl.lalm.backbone import OmniAudioProcessor

        processor = OmniAudioProcessor(feature_extractor(), tokenizer, chat_template=QWEN2_5_OMNI_CHAT_TEMPLATE)
    return model, processor, ids


def _save_processor(processor, out: Path) -> None:
    """``save_pretrained``; the torchvision-free Omni processor is saved as its parts, marked as
    ``Qwen2_5OmniProcessor`` (as on the hub), so a machine with torchvision loads the full one."""
    from emorl.lalm.backbone import OmniAudioProcessor

    if not isinstance(processor, OmniAudioProcessor):
        processor.save_pretrained(out)
        return
    processor.tokenizer.save_pretrained(out)
    processor.feature_extractor.save_pretrained(out)
    path = out / "preprocessor_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["processor_class"] = "Qwen2_5OmniProcessor"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


BUILDERS = {"qwen2-audio": _build_qwen2_audio, "qwen2.5-omni": _build_qwen2_5_omni}


def build_tiny_family(family: str, out: str | os.PathLike, seed: int = 0, sizes: dict | None = None) -> Path:
    """Write a tiny random model of ``family`` (``qwen2-audio`` | ``qwen2.5-omni``) into ``out``."""
    import torch
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    if family not in BUILDERS:
        raise ValueError(f"unknown audio-language family {family!r} (known: {', '.join(BUILDERS)})")
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the Omni talker's default ids are out of the tiny vocab: noise
    try:
        torch.manual_seed(seed)
        tokenizer = train_tokenizer(family, int(sizes["vocab_size"]))
        model, processor, ids = BUILDERS[family](tokenizer, sizes)
        model.generation_config = GenerationConfig(
            eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], pad_token_id=ids["<|endoftext|>"],
            bos_token_id=ids["<|endoftext|>"],
        )
        model.save_pretrained(out)
        _save_processor(processor, out)
    finally:
        hf_logging.set_verbosity(verbosity)
    return out


def build_tiny(card, out: str | os.PathLike, seed: int = 0) -> Path:
    """Zoo entry point (``emorl.tiny_models.build_tiny`` for ``kind: lalm`` cards): backend = family."""
    return build_tiny_family(card.backend, out, seed=seed, sizes=dict(card.tiny or {}))

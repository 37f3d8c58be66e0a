"""Chat inputs for a batch of clips, and the merged prompt embeddings (audio tower once per clip).

Messages are what the processors' chat templates take (built by :mod:`emorl.prompts`), one list
of messages per example, each with exactly one audio part::

    [{"role": "system", "content": "You are a helpful assistant."},          # optional
     {"role": "user", "content": [{"type": "audio"},
                                  {"type": "text", "text": "Which emotion ...?"}]}]

An audio part needs no payload: the clips are passed separately (``audios``, mono float 16 kHz).
Qwen2-Audio's hub template recognises an audio part only by an ``audio`` / ``audio_url`` key, so
:func:`render_prompts` adds ``"audio": "<clip>"`` where it is missing.

:func:`build_prompts` -> :class:`PromptBatch` (left-padded ``input_ids`` with the audio
placeholder already expanded to one ``<|AUDIO|>`` per audio frame, 25 per second,
``input_features`` padded to 30 s, ``feature_attention_mask``).
:func:`embed_prompts` -> :class:`PromptEmbeds`: the token embeddings with every clip's audio
features written over its ``<|AUDIO|>`` positions, computed with one batched audio-tower call
(each clip once). Generation, SFT and GRPO's policy / reference log-prob passes all start from
these embeddings, so the audio tower never runs again for the same prompts.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields, replace
from typing import Sequence

import numpy as np
import torch

SAMPLING_RATE = 16_000


@dataclass
class PromptBatch:
    """The processor's output for a batch of prompts (left padded)."""

    input_ids: torch.Tensor               # (B, L) long, left padded
    attention_mask: torch.Tensor          # (B, L)
    input_features: torch.Tensor          # (B, 128, 3000) log-mel, padded to 30 s
    feature_attention_mask: torch.Tensor  # (B, 3000) 1 on the clip's frames

    def to(self, device) -> "PromptBatch":
        return PromptBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for ``model(**...)`` / ``model.generate(**...)``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def select(self, index) -> "PromptBatch":
        return PromptBatch(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass
class PromptEmbeds:
    """Merged prompt embeddings: text embeddings with the audio features in place."""

    inputs_embeds: torch.Tensor   # (B, L, H)
    attention_mask: torch.Tensor  # (B, L), left padded
    input_ids: torch.Tensor       # (B, L) the prompt ids (audio positions hold <|AUDIO|>)

    def __len__(self) -> int:
        return int(self.inputs_embeds.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """Prompt lengths in tokens (audio tokens included, padding excluded)."""
        return self.attention_mask.sum(-1)

    def repeat_interleave(self, repeats: int) -> "PromptEmbeds":
        """Each prompt ``repeats`` times in a row (rows 0,0,..,1,1,..): G samples per prompt."""
        if repeats == 1:
            return self
        return PromptEmbeds(*(t.repeat_interleave(repeats, dim=0) for t in
                              (self.inputs_embeds, self.attention_mask, self.input_ids)))

    def select(self, index) -> "PromptEmbeds":
        return PromptEmbeds(self.inputs_embeds[index], self.attention_mask[index], self.input_ids[index])

    def detach(self) -> "PromptEmbeds":
        return replace(self, inputs_embeds=self.inputs_embeds.detach())


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counting only attended tokens (left padding gives the same positions as alone).

    For audio-only prompts this is also what both families use: Qwen2.5-Omni's 3-D rope reduces
    to these positions on every axis when there is no image or video.
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def _normalise(messages: list[dict]) -> list[dict]:
    messages = copy.deepcopy(messages)
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if part.get("type") == "audio" and "audio" not in part and "audio_url" not in part:
                    part["audio"] = "<clip>"
    return messages


def render_prompts(backbone, messages_per_example: Sequence[list[dict]], add_generation_prompt: bool = True) -> list[str]:
    """The chat template applied to each example (text, audio placeholders not yet expanded)."""
    processor = backbone.processor
    texts = []
    for messages in messages_per_example:
        text = processor.apply_chat_template(
            _normalise(list(messages)), tokenize=False, add_generation_prompt=add_generation_prompt
        )
        texts.append(text if isinstance(text, str) else text[0])
    return texts


def build_prompts(
    backbone,
    messages_per_example: Sequence[list[dict]],
    audios: Sequence[np.ndarray],
    sampling_rate: int = SAMPLING_RATE,
    add_generation_prompt: bool = True,
    device: torch.device | str | None = None,
) -> PromptBatch:
    """Tokenise a batch of chat prompts with their clips (one clip per example, 16 kHz mono).

    Clips longer than 30 s are cut to 30 s by the feature extractor, as in the real models.
    """
    if len(messages_per_example) != len(audios):
        raise ValueError(f"{len(messages_per_example)} prompts but {len(audios)} clips")
    if sampling_rate != SAMPLING_RATE:
        raise ValueError(f"clips must be {SAMPLING_RATE} Hz (emorl.audio resamples), not {sampling_rate}")
    texts = render_prompts(backbone, messages_per_example, add_generation_prompt)
    token = backbone.processor.audio_token
    for i, text in enumerate(texts):
        if text.count(token) != 1:
            raise ValueError(
                f"prompt {i} has {text.count(token)} audio placeholders after the chat template, not 1: "
                "give each example one content part {'type': 'audio'}"
            )
    waves = [np.asarray(a, dtype=np.float32).reshape(-1) for a in audios]
    out = backbone.processor(
        text=texts, audio=waves, sampling_rate=sampling_rate, return_tensors="pt", padding=True,
        padding_side="left",
    )
    batch = PromptBatch(
        input_ids=out["input_ids"], attention_mask=out["attention_mask"],
        input_features=out["input_features"], feature_attention_mask=out["feature_attention_mask"],
    )
    target = device if device is not None else backbone.device
    return batch.to(target)


# -- audio features and the merge ------------------------------------------------------------
def audio_embeddings(backbone, batch: PromptBatch) -> torch.Tensor:
    """Every clip's audio features in the language model's width, concatenated over the batch in
    order (``(sum of audio tokens, H)``): one audio-tower call for the whole batch."""
    hf_model = backbone.hf_model
    inner = hf_model.model
    features = batch.input_features
    mask = batch.feature_attention_mask
    if backbone.family == "qwen2.5-omni":
        # the model's own helper: concatenates the clips' valid frames, one tower call
        out = hf_model.get_audio_features(features, feature_attention_mask=mask, return_dict=True)
        return out.last_hidden_state
    # Qwen2-Audio has no such helper in transformers 5.x: the same steps as Qwen2AudioModel.forward
    from transformers.masking_utils import create_bidirectional_mask

    tower = inner.audio_tower
    feat_lengths, out_lengths = tower._get_feat_extract_output_lengths(mask.sum(-1))
    batch_size, _, max_mel = features.shape
    max_len = (max_mel - 2) // 2 + 1
    seq_range = torch.arange(max_len, device=feat_lengths.device).unsqueeze(0).expand(batch_size, max_len)
    audio_mask_2d = (seq_range < feat_lengths.unsqueeze(1)).long()
    dummy = torch.zeros((batch_size, max_len, 1), dtype=tower.conv1.weight.dtype, device=features.device)
    audio_mask = create_bidirectional_mask(config=tower.config, inputs_embeds=dummy, attention_mask=audio_mask_2d)
    hidden = tower(features.to(tower.conv1.weight.dtype), attention_mask=audio_mask).last_hidden_state
    projected = inner.multi_modal_projector(hidden)
    keep = torch.arange(projected.shape[1], device=projected.device)[None, :] < out_lengths.to(projected.device)[:, None]
    return projected[keep]


def merge_audio(backbone, input_ids: torch.Tensor, audio_features: torch.Tensor) -> torch.Tensor:
    """Token embeddings of ``input_ids`` with ``audio_features`` written over the audio tokens."""
    embeds = backbone.input_embeddings()(input_ids)
    audio_mask = (input_ids == backbone.audio_token_id)
    if int(audio_mask.sum()) != audio_features.shape[0]:
        raise ValueError(
            f"{int(audio_mask.sum())} audio tokens in the prompts but {audio_features.shape[0]} audio "
            "features: build the batch with build_prompts (it expands each placeholder)"
        )
    audio_mask = audio_mask.unsqueeze(-1).to(embeds.device)
    return embeds.masked_scatter(audio_mask, audio_features.to(embeds.device, embeds.dtype))


def embed_prompts(backbone, batch: PromptBatch) -> PromptEmbeds:
    """Merged prompt embeddings: each clip through the audio tower exactly once.

    Runs under the caller's grad mode: under ``torch.no_grad()`` for generation / reference
    passes; with grad when the projector is trained (the graph then reaches it once per batch).
    """
    if backbone.family == "qwen2.5-omni":
        # Omni's helper for the merge (same mask as its forward uses)
        features = audio_embeddings(backbone, batch)
        hf_model = backbone.hf_model
        embeds = backbone.input_embeddings()(batch.input_ids)
        _, _, audio_mask = hf_model.model.get_placeholder_mask(batch.input_ids, inputs_embeds=embeds)
        if int(audio_mask[..., 0].sum()) != features.shape[0]:
            raise ValueError(f"{int(audio_mask[..., 0].sum())} audio tokens but {features.shape[0]} audio features")
        embeds = embeds.masked_scatter(audio_mask, features.to(embeds.device, embeds.dtype))
    else:
        embeds = merge_audio(backbone, batch.input_ids, audio_embeddings(backbone, batch))
    return PromptEmbeds(inputs_embeds=embeds, attention_mask=batch.attention_mask, input_ids=batch.input_ids)

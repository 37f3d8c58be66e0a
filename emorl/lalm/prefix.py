"""Scores of G completions per prompt with each prompt run through the language model once.

GRPO scores G answers per prompt three times a step (policy with grad, reference, old policy).
Run as full sequences, every answer repeats its prompt: with Qwen2-Audio's 750 audio tokens and
~60 answer tokens, over 90 % of those tokens are prompt. Here each distinct prompt goes through the
language model once, its per-layer keys and values are kept (with their autograd graph), and the
answers attend to them; the gradient of every answer reaches the prompt's LoRA weights through the
shared keys and values. Log-probs, entropies and gradients equal the full-sequence computation up
to floating-point summation order (``tests/test_prefix_scores.py``), with or without gradient
checkpointing (non-reentrant, as emorl enables it).

Two small cache layers make this work with transformers' decoder layers:

- :class:`_RecordingLayer` keeps the last keys/values it was given, *overwriting*: when gradient
  checkpointing replays a prompt layer in the backward pass, the replay overwrites rather than
  appends;
- :class:`_PrefixLayer` returns ``prompt + answer`` keys/values without storing anything, so the
  answer pass can be replayed too.

Transformers drops any cache under gradient checkpointing unless a layer declares that it only
reads it (``_can_checkpoint_with_cache``); both layers are safe to replay, so the flag is set on the
model's layers for the duration of the call.
"""

from __future__ import annotations

import contextlib

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from emorl.lalm.generation import token_scores
from emorl.lalm.inputs import PromptEmbeds, position_ids


class _RecordingLayer(DynamicLayer):
    """Holds the keys/values of the last call (the prompt pass); a replay overwrites them."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.values = key_states, value_states
        return key_states, value_states


class _PrefixLayer(DynamicLayer):
    """Read-only prompt keys/values: each call attends over ``prompt + new`` and stores nothing."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)


@contextlib.contextmanager
def _cache_kept_under_checkpointing(model: torch.nn.Module):
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    try:
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("_can_checkpoint_with_cache", None)


def shared_prompt_scores(
    backbone,
    prompt: PromptEmbeds,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    prompt_index: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs ``(N, T)`` (and entropies) of completions, each prompt computed once.

    Same contract as :func:`emorl.lalm.generation.completion_scores`: ``prompt_index`` maps each of
    the N completion rows to its row of ``prompt``; masked positions score 0.
    """
    device = prompt.inputs_embeds.device
    prompt_index = prompt_index.to(device)
    used, row_of = torch.unique(prompt_index, return_inverse=True)
    prefix = prompt.select(used)
    completion_ids = completion_ids.to(device)
    completion_mask = completion_mask.to(device=device, dtype=prefix.attention_mask.dtype)
    text_model = backbone.hf_model.model
    length = prefix.inputs_embeds.shape[1]
    recorded = DynamicCache()
    recorded.layer_class_to_replicate = _RecordingLayer
    with _cache_kept_under_checkpointing(backbone.hf_model):
        prompt_hidden = text_model(
            inputs_embeds=prefix.inputs_embeds, attention_mask=prefix.attention_mask,
            position_ids=position_ids(prefix.attention_mask), past_key_values=recorded, use_cache=True,
        ).last_hidden_state[:, -1]  # left padding: the last position is every prompt's last token
        shared = DynamicCache()
        shared.layer_class_to_replicate = None
        shared.layers = [_PrefixLayer(layer.keys[row_of], layer.values[row_of]) for layer in recorded.layers]
        mask = torch.cat([prefix.attention_mask[row_of], completion_mask], dim=1)
        answer_hidden = text_model(
            inputs_embeds=backbone.input_embeddings()(completion_ids), attention_mask=mask,
            position_ids=position_ids(mask)[:, length:], past_key_values=shared, use_cache=True,
            cache_position=torch.arange(length, length + completion_ids.shape[1], device=device),
        ).last_hidden_state
    hidden = torch.cat([prompt_hidden[row_of].unsqueeze(1), answer_hidden[:, :-1]], dim=1)
    return token_scores(backbone, hidden, completion_ids, completion_mask, temperature, with_entropy)

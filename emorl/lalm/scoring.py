"""Log-probabilities and entropies of completions after merged prompts: one operation, one name.

    logps, entropy = completion_scores(backbone, result.prompt, result.completion_ids,
                                       result.completion_mask, prompt_index=result.prompt_index,
                                       with_entropy=True)

:func:`completion_scores` is what every training pass calls: SFT's target log-likelihood, GRPO's
policy pass (with grad), its old-policy and reference passes (no grad; the reference inside
``backbone.adapter_disabled()``). It reuses the prompts' embeddings (:class:`PromptEmbeds`: no
audio-tower call) and runs under the caller's grad mode.

**Each prompt once.** GRPO scores G answers per prompt three times a step. Run as full sequences,
every answer repeats its prompt: with Qwen2-Audio's 750 audio tokens and ~60 answer tokens, over
90 % of those tokens are prompt. When several rows answer the same prompt, each distinct prompt
goes through the language model once, its per-layer keys and values are kept (with their autograd
graph), and the answers attend to them (:func:`shared_prompt_scores`); the gradient of every
answer reaches the prompt's LoRA weights through the shared keys and values. Log-probs,
entropies and gradients equal the full-sequence computation up to floating-point summation order
(``tests/test_prefix_scores.py``), with or without gradient checkpointing (non-reentrant, as emorl
enables it). Two small cache layers make this work with transformers' decoder layers:

- :class:`_RecordingLayer` keeps the last keys/values it was given, *overwriting*: when gradient
  checkpointing replays a prompt layer in the backward pass, the replay overwrites rather than
  appends;
- :class:`_PrefixLayer` returns ``prompt + answer`` keys/values without storing anything, so the
  answer pass can be replayed too.

Transformers drops any cache under gradient checkpointing unless a layer declares that it only
reads it (``_can_checkpoint_with_cache``); both layers are safe to replay, so the flag is set on the
model's layers for the duration of the call.

**The vocabulary in chunks.** :func:`token_scores` projects hidden states to the vocabulary
``LOGIT_CHUNK_ROWS`` answers at a time (float32 log-softmax, gather, entropy), so the float32
logits of a whole batch (answers x tokens x a 152k-156k vocabulary: several GB for a GRPO
micro-batch of the 7B models) never exist at once in the forward pass.
"""

from __future__ import annotations

import contextlib

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

from emorl.lalm.inputs import PromptEmbeds, position_ids

#: answers whose vocabulary logits are computed at once (see :func:`token_scores`)
LOGIT_CHUNK_ROWS = 4


def completion_scores(
    backbone,
    prompt: PromptEmbeds,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor | None = None,
    prompt_index: torch.Tensor | None = None,
    temperature: float = 1.0,
    with_entropy: bool = False,
    share_prompts: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs ``(N, T)`` of ``completion_ids`` after the merged prompts and, with
    ``with_entropy``, each position's next-token entropy ``(N, T)`` (no grad), from one forward pass.

    ``prompt_index`` maps each completion row to its prompt row (``GenerationResult.prompt_index``);
    without it the rows correspond one to one. Positions where ``completion_mask`` is 0 score 0.
    When several rows answer the same prompt (``prompt_index`` with repeats) each prompt runs
    through the language model once (:func:`shared_prompt_scores`; same values and gradients);
    ``share_prompts=False`` runs every row as a full sequence. Runs under the caller's grad mode.
    """
    from emorl.lalm.generation import compute_context

    with compute_context(backbone):
        return _completion_scores(backbone, prompt, completion_ids, completion_mask, prompt_index, temperature,
                                  with_entropy, share_prompts)


def _completion_scores(backbone, prompt, completion_ids, completion_mask, prompt_index, temperature,
                       with_entropy, share_prompts):
    if share_prompts and prompt_index is not None and len(torch.unique(prompt_index)) < len(prompt_index):
        if completion_mask is None:
            completion_mask = torch.ones_like(completion_ids)
        return shared_prompt_scores(backbone, prompt, completion_ids, completion_mask, prompt_index,
                                    temperature, with_entropy)
    if prompt_index is not None:
        prompt = prompt.select(prompt_index.to(prompt.inputs_embeds.device))
    device = prompt.inputs_embeds.device
    completion_ids = completion_ids.to(device)
    if completion_mask is None:
        completion_mask = torch.ones_like(completion_ids)
    completion_mask = completion_mask.to(device=device, dtype=prompt.attention_mask.dtype)
    embeds = torch.cat([prompt.inputs_embeds, backbone.input_embeddings()(completion_ids)], dim=1)
    mask = torch.cat([prompt.attention_mask, completion_mask], dim=1)
    hf_model = backbone.hf_model
    hidden = hf_model.model(
        inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids(mask), use_cache=False
    ).last_hidden_state
    length = prompt.inputs_embeds.shape[1]
    return token_scores(backbone, hidden[:, length - 1 : -1], completion_ids, completion_mask, temperature, with_entropy)


def token_scores(
    backbone,
    hidden: torch.Tensor,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_rows: int = LOGIT_CHUNK_ROWS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs ``(N, T)`` of ``completion_ids`` (and entropies, no grad) from the hidden states that
    predict them (``hidden[:, t]`` predicts token ``t``); 0 where ``completion_mask`` is 0.

    The vocabulary projection, the float32 log-softmax and the entropy run ``chunk_rows`` rows at
    a time: at most that many rows' float32 logits exist at once in the forward pass.
    """
    lm_head = backbone.hf_model.lm_head
    logps, entropies = [], []
    for rows, ids, keep in zip(hidden.split(chunk_rows), completion_ids.split(chunk_rows),
                               completion_mask.split(chunk_rows)):
        logits = lm_head(rows).float()
        if temperature != 1.0:
            logits = logits / temperature
        log_probs = torch.log_softmax(logits, dim=-1)
        keep = keep.to(log_probs.dtype)
        logps.append(log_probs.gather(-1, ids.unsqueeze(-1)).squeeze(-1) * keep)
        if with_entropy:
            with torch.no_grad():
                entropies.append(-(log_probs.exp() * log_probs).sum(-1) * keep)
    return torch.cat(logps), torch.cat(entropies) if with_entropy else None


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

    Same contract as :func:`completion_scores`: ``prompt_index`` maps each of the N completion rows
    to its row of ``prompt``; masked positions score 0.
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

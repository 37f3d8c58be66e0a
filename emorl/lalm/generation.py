"""Batched generation from merged prompt embeddings, and log-probs of completions.

    batch = build_prompts(backbone, messages, clips)            # emorl.lalm.inputs
    result = generate(backbone, batch, max_new_tokens=64)       # greedy, stops at </answer>
    result.texts                                                # cut after the stop string

Each clip goes through the audio tower once (:func:`emorl.lalm.inputs.embed_prompts`); the
language model then generates from ``inputs_embeds`` with left padding. With
``num_return_sequences=G`` the *embeddings* are repeated (rows ``0,0,..,1,1,..``), so the audio
tower still runs once per prompt. The checkpoint's own sampling defaults (``generation_config``:
top_k, repetition_penalty, ...) are not used: every setting comes from the arguments.

For GRPO, :func:`completion_logprobs` scores completions from the same :class:`PromptEmbeds`
(policy pass; and the reference pass inside ``backbone.adapter_disabled()``), with no audio
tower call.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import StoppingCriteria

from emorl.lalm.inputs import PromptBatch, PromptEmbeds, embed_prompts, position_ids

DEFAULT_STOP_STRINGS = ("</answer>",)


@dataclass
class GenerationResult:
    """``N = B * num_return_sequences`` rows, grouped by prompt (rows ``g*G ... g*G+G-1``)."""

    texts: list[str]                 # decoded without special tokens, cut after the stop string
    completion_ids: torch.Tensor     # (N, T) long; pad id after the end
    completion_mask: torch.Tensor    # (N, T) 1 up to and including the stopping token
    truncated: torch.Tensor          # (N,) bool: no eos / stop string within max_new_tokens
    prompt_index: torch.Tensor       # (N,) which prompt each row answers
    prompt_lengths: torch.Tensor     # (B,) prompt tokens (audio tokens included, padding not)
    prompt: PromptEmbeds             # the B merged prompts (reuse them for log-probs)
    num_return_sequences: int = 1

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def _as_embeds(backbone, inputs: PromptBatch | PromptEmbeds) -> PromptEmbeds:
    if isinstance(inputs, PromptEmbeds):
        return inputs
    if isinstance(inputs, PromptBatch):
        return embed_prompts(backbone, inputs)
    raise TypeError(f"generate() takes a PromptBatch or PromptEmbeds, not {type(inputs).__name__}")


_STOP_CRITERIA: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _StopStringsAtTokenEnds(StoppingCriteria):
    """transformers' ``StopStringCriteria``, run only when some row's newest token can end a stop string.

    A stop string is matched when the text ends with it, so the newest token must end with a piece
    of it (``StopStringCriteria`` calls that a positive end length). A lookup over the vocabulary
    says which tokens can; most decoding steps end with none of them and skip the full check
    (about 8 % of decoding time on the tiny model). Same answers as the full check (tested).
    """

    def __init__(self, criterion) -> None:
        self.criterion = criterion
        first_end = criterion.max_valid_positions * criterion.num_stop_strings
        self.can_end = (criterion.embedding_vec[:, first_end:-1] > 0).any(-1)

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        if self.can_end.device != input_ids.device:
            self.can_end = self.can_end.to(input_ids.device)
        ends = self.can_end[input_ids[:, -1].clamp(0, self.can_end.numel() - 1)]
        if not bool(ends.any()):
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return self.criterion(input_ids, scores, **kwargs) & ends


def stop_string_criteria(tokenizer, stop_strings: Sequence[str]):
    """A stop-string stopping criterion for ``tokenizer``, built once per tokenizer and stop-string set.

    ``generate(stop_strings=...)`` rebuilds transformers' ``StopStringCriteria`` on every call, and
    building it walks the whole vocabulary (``get_vocab`` and a cache key over every token): ~1.4 s
    per call at Qwen2's 151k tokens, i.e. once per GRPO step. The criterion holds no per-call
    state, so one object serves every call.
    """
    from transformers import StopStringCriteria

    per_tokenizer = _STOP_CRITERIA.setdefault(tokenizer, {})
    key = tuple(stop_strings)
    if key not in per_tokenizer:
        per_tokenizer[key] = _StopStringsAtTokenEnds(StopStringCriteria(tokenizer=tokenizer, stop_strings=list(key)))
    return per_tokenizer[key]


def _stop_position(tokenizer, ids: list[int], stop_strings: Sequence[str]) -> int | None:
    """Smallest k with a stop string in decode(ids[:k]) (binary search; the property is monotone)."""
    def hit(k: int) -> bool:
        text = tokenizer.decode(ids[:k], skip_special_tokens=False)
        return any(s in text for s in stop_strings)

    if not stop_strings or not ids or not hit(len(ids)):
        return None
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if hit(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to and including the earliest stop string (unchanged when none occurs)."""
    ends = [text.find(s) + len(s) for s in stop_strings if s and s in text]
    return text[: min(ends)] if ends else text


def postprocess(backbone, sequences: torch.Tensor, stop_strings: Sequence[str]):
    """(texts, completion_ids, completion_mask, truncated) from generated ids (N, T)."""
    tokenizer = backbone.tokenizer
    eos = set(backbone.eos_token_ids)
    pad = backbone.pad_token_id
    n, t = sequences.shape
    mask = torch.zeros_like(sequences)
    truncated = torch.zeros(n, dtype=torch.bool)
    texts = []
    for i, row in enumerate(sequences.tolist()):
        end = next((j + 1 for j, tok in enumerate(row) if tok in eos), None)
        stop = _stop_position(tokenizer, row[: end or t], stop_strings)
        if stop is not None:
            end = stop if end is None else min(end, stop)
        if end is None:
            end, truncated[i] = t, True
        mask[i, :end] = 1
        texts.append(cut_at_stop(tokenizer.decode(row[:end], skip_special_tokens=True), stop_strings))
    completion_ids = sequences.masked_fill(mask == 0, pad)
    return texts, completion_ids, mask, truncated


@torch.no_grad()
def generate(
    backbone,
    inputs: PromptBatch | PromptEmbeds,
    max_new_tokens: int = 256,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    num_return_sequences: int = 1,
    stop_strings: Sequence[str] | None = DEFAULT_STOP_STRINGS,
    seed: int | None = None,
    min_new_tokens: int = 0,
) -> GenerationResult:
    """Generate answers for a batch of prompts (greedy by default).

    ``inputs``: a :class:`PromptBatch` (its clips go through the audio tower once here) or
    :class:`PromptEmbeds` already computed. Stops a row at an end-of-turn token
    (``backbone.eos_token_ids``) or once its text contains one of ``stop_strings``; ``seed`` seeds
    sampling; ``min_new_tokens`` (benchmarks) forbids the end-of-turn tokens before that length.
    """
    from transformers import GenerationConfig, StoppingCriteriaList

    prompt = _as_embeds(backbone, inputs)
    g = int(num_return_sequences)
    if g < 1:
        raise ValueError("num_return_sequences must be >= 1")
    if g > 1 and not do_sample:
        raise ValueError("num_return_sequences > 1 needs do_sample=True (greedy gives G identical answers)")
    expanded = prompt.repeat_interleave(g)
    stop_strings = tuple(stop_strings or ())
    config = GenerationConfig(
        max_new_tokens=int(max_new_tokens), min_new_tokens=int(min_new_tokens) or None, do_sample=bool(do_sample),
        temperature=float(temperature) if do_sample else None, top_p=float(top_p) if do_sample else None,
        top_k=int(top_k) if do_sample else None, repetition_penalty=1.0,
        eos_token_id=backbone.eos_token_ids, pad_token_id=backbone.pad_token_id,
        bos_token_id=backbone.pad_token_id, num_return_sequences=1,
        use_cache=True,
    )
    criteria = StoppingCriteriaList([stop_string_criteria(backbone.tokenizer, stop_strings)] if stop_strings else [])
    if seed is not None:
        torch.manual_seed(seed)
    hf_model = backbone.hf_model
    was_training = hf_model.training
    hf_model.eval()
    try:
        sequences = hf_model.generate(
            inputs_embeds=expanded.inputs_embeds, attention_mask=expanded.attention_mask,
            generation_config=config, stopping_criteria=criteria,
        )
    finally:
        hf_model.train(was_training)
    if not isinstance(sequences, torch.Tensor):
        sequences = sequences.sequences
    sequences = sequences.cpu()
    texts, completion_ids, mask, truncated = postprocess(backbone, sequences, stop_strings)
    return GenerationResult(
        texts=texts, completion_ids=completion_ids, completion_mask=mask, truncated=truncated,
        prompt_index=torch.arange(len(prompt)).repeat_interleave(g), prompt_lengths=prompt.lengths.cpu(),
        prompt=prompt, num_return_sequences=g,
    )


def completion_logprobs(
    backbone,
    prompt: PromptEmbeds,
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor | None = None,
    prompt_index: torch.Tensor | None = None,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Per-token log-probs ``(N, T)`` of ``completion_ids`` after the merged prompts.

    ``prompt_index`` maps each completion row to its prompt row (``GenerationResult.prompt_index``);
    without it the rows correspond one to one. No audio-tower call: the prompts' embeddings are
    reused. Positions where ``completion_mask`` is 0 get log-prob 0. Runs under the caller's grad
    mode (policy: with grad; reference: ``torch.no_grad()`` inside ``backbone.adapter_disabled()``).
    """
    return completion_scores(backbone, prompt, completion_ids, completion_mask, prompt_index, temperature)[0]


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
    """:func:`completion_logprobs` plus, with ``with_entropy``, each position's next-token
    entropy ``(N, T)`` (no grad; 0 where the mask is 0) from the same forward pass.

    When several rows answer the same prompt (``prompt_index`` with repeats) each prompt runs
    through the language model once and its answers attend to its keys and values
    (:func:`emorl.lalm.prefix.shared_prompt_scores`; same values and gradients);
    ``share_prompts=False`` runs every row as a full sequence.
    """
    if share_prompts and prompt_index is not None and len(torch.unique(prompt_index)) < len(prompt_index):
        from emorl.lalm.prefix import shared_prompt_scores

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
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs ``(N, T)`` of ``completion_ids`` (and entropies, no grad) from the hidden states that
    predict them (``hidden[:, t]`` predicts token ``t``); 0 where ``completion_mask`` is 0."""
    logits = backbone.hf_model.lm_head(hidden).float()
    if temperature != 1.0:
        logits = logits / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    keep = completion_mask.to(log_probs.dtype)
    logp = log_probs.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1) * keep
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = -(log_probs.exp() * log_probs).sum(-1) * keep
    return logp, entropy

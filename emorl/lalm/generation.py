"""Batched generation from merged prompt embeddings.

    batch = build_prompts(backbone, messages, clips)            # emorl.lalm.inputs
    result = generate(backbone, batch, max_new_tokens=64)       # greedy, stops at </answer>
    result.texts                                                # cut after the stop string

Each clip goes through the audio tower once (:func:`emorl.lalm.inputs.embed_prompts`); the
language model then generates from ``inputs_embeds`` with left padding. With
``num_return_sequences=G`` the *embeddings* are repeated (rows ``0,0,..,1,1,..``), so the audio
tower still runs once per prompt. The checkpoint's own sampling defaults (``generation_config``:
top_k, repetition_penalty, ...) are not used: every setting comes from the arguments.

The completions are scored (log-probs, entropies) from the same :class:`PromptEmbeds` by
:func:`emorl.lalm.scoring.completion_scores`, with no audio tower call.
"""

from __future__ import annotations

import contextlib
import time
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import StoppingCriteria

from emorl.lalm.inputs import PromptBatch, PromptEmbeds, embed_prompts

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
    #: seconds of ``decode`` (the model's generate, until the ids are on the CPU) and ``answers``
    #: (cutting at stop strings, decoding to text)
    timings: dict[str, float] = field(default_factory=dict)

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
    A sharded model (FSDP) is gathered once for the call, not once per decoding step.
    """
    with compute_context(backbone, gathered=True):
        return _generate(backbone, inputs, max_new_tokens, do_sample, temperature, top_p, top_k,
                         num_return_sequences, stop_strings, seed, min_new_tokens)


def compute_context(backbone, gathered: bool = False) -> contextlib.ExitStack:
    """The context every forward pass runs in: the backbone's :meth:`~emorl.lalm.backbone.Backbone.autocast`
    and, with ``gathered``, a sharded model gathered once for the whole block
    (:meth:`~emorl.lalm.backbone.Backbone.gathered`). Backbone stand-ins without them get neither."""
    stack = contextlib.ExitStack()
    if gathered and hasattr(backbone, "gathered"):
        stack.enter_context(backbone.gathered())
    if hasattr(backbone, "autocast"):
        stack.enter_context(backbone.autocast())
    return stack


def _generate(backbone, inputs, max_new_tokens, do_sample, temperature, top_p, top_k, num_return_sequences,
              stop_strings, seed, min_new_tokens) -> GenerationResult:
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
    start = time.perf_counter()
    try:
        sequences = hf_model.generate(
            inputs_embeds=expanded.inputs_embeds, attention_mask=expanded.attention_mask,
            generation_config=config, stopping_criteria=criteria,
        )
    finally:
        hf_model.train(was_training)
    if not isinstance(sequences, torch.Tensor):
        sequences = sequences.sequences
    sequences = sequences.cpu()  # waits for the device: the decoding time is all in
    decoded = time.perf_counter()
    texts, completion_ids, mask, truncated = postprocess(backbone, sequences, stop_strings)
    return GenerationResult(
        texts=texts, completion_ids=completion_ids, completion_mask=mask, truncated=truncated,
        prompt_index=torch.arange(len(prompt)).repeat_interleave(g), prompt_lengths=prompt.lengths.cpu(),
        prompt=prompt, num_return_sequences=g,
        timings={"decode": decoded - start, "answers": time.perf_counter() - decoded},
    )

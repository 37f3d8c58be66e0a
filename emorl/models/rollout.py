"""GRPO rollouts: G sampled answers per prompt, their rewards and advantages, log-prob passes.

Pure orchestration of :mod:`emorl.lalm` and :mod:`emorl.rl` for :class:`emorl.models.grpo.GRPOLALM`:

- :func:`sample_rollout` embeds the prompts once (each clip through the audio tower once),
  samples ``G`` answers per prompt from those embeddings, scores them and computes group
  advantages; the prompt embeddings are kept, so every later log-prob pass (old policy,
  reference, policy with grad) reuses them and the audio tower never runs again for this batch;
- :func:`logprobs_in_chunks` runs a log-prob pass ``micro_batch`` answers at a time, returning
  per-token log-probs and, optionally, per-token entropies.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from emorl.lalm.generation import completion_scores, generate
from emorl.lalm.inputs import PromptEmbeds, build_prompts, embed_prompts
from emorl.rl.advantages import group_advantages
from emorl.rl.rewards import RewardContext, RewardSet, predicted_label


@dataclass
class Rollout:
    """One batch of prompts with G answers each (rows grouped by prompt)."""

    prompt: PromptEmbeds             # B merged prompts (no grad)
    prompt_index: torch.Tensor       # (N,) prompt row of each answer
    completion_ids: torch.Tensor     # (N, T)
    completion_mask: torch.Tensor    # (N, T) 1 on the tokens that count in the loss
    texts: list[str]
    labels: list[str]
    rewards: torch.Tensor            # (N,) weighted total
    components: dict[str, torch.Tensor]
    advantages: torch.Tensor         # (N,)
    zero_std: torch.Tensor           # (B,) groups with equal rewards
    truncated: torch.Tensor          # (N,)
    correct: torch.Tensor            # (N,) predicted label == true label
    old_logps: torch.Tensor | None = None
    ref_logps: torch.Tensor | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.completion_ids.shape[0])


#: ``hook(texts, labels, correct, context) -> (extra (N,), {name: (N,)})``: a reward term that needs
#: the whole batch (groups, correctness, rows), added to the total before the advantages.
RewardHook = Callable[[Sequence[str], Sequence[str], torch.Tensor, RewardContext],
                      tuple[torch.Tensor, dict[str, torch.Tensor]]]


def sample_rollout(
    backbone,
    messages: Sequence[list[dict]],
    clips: Sequence,
    labels: Sequence[str],
    rewards: RewardSet,
    context: RewardContext,
    num_generations: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    scale_rewards: str = "group",
    mask_truncated: bool = False,
    gather_rewards=None,
    rows: Sequence[Mapping | None] | None = None,
    reward_hook: RewardHook | None = None,
) -> Rollout:
    """Generate, score and compute advantages for one batch (no gradients).

    ``gather_rewards``: a function that returns every rank's rewards concatenated (for
    ``scale_rewards="batch"`` under DDP); ``None`` uses the local ones. ``rows``: each prompt's
    manifest row (``batch["row"]``), handed to the rewards per answer as ``context.rows``.
    ``reward_hook``: an extra reward term (GRPO-PTR's reasoning reward), added to the total.
    """
    start = time.perf_counter()
    with torch.no_grad():
        batch = build_prompts(backbone, messages, clips)
        prompt = embed_prompts(backbone, batch)
        result = generate(
            backbone, prompt, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature,
            top_p=top_p, num_return_sequences=num_generations,
        )
    generated = time.perf_counter()
    answer_labels = [labels[int(i)] for i in result.prompt_index]
    context = dataclasses.replace(
        context, group_size=num_generations,
        rows=[rows[int(i)] for i in result.prompt_index] if rows is not None else None,
    )
    total, components = rewards(result.texts, answer_labels, context)
    correct = torch.tensor(
        [predicted_label(text, context.classes, context.strict_answer) == label
         for text, label in zip(result.texts, answer_labels)], dtype=torch.bool,
    )
    if reward_hook is not None:
        extra, more = reward_hook(result.texts, answer_labels, correct, context)
        total = total + extra
        components = {**components, **more}
    gathered = scale_rewards == "batch" and gather_rewards is not None
    advantages, zero_std = group_advantages(total, num_generations, "none" if gathered else scale_rewards)
    if gathered:  # the batch std over every rank's rewards; this rank's rows of the result
        everything = gather_rewards(total)
        offset = _rank() * len(total)  # every rank samples the same number of answers
        advantages = group_advantages(everything, num_generations, "batch")[0][offset : offset + len(total)]
    mask = result.completion_mask.clone()
    if mask_truncated:
        mask[result.truncated] = 0
    return Rollout(
        prompt=prompt, prompt_index=result.prompt_index, completion_ids=result.completion_ids,
        completion_mask=mask, texts=result.texts, labels=answer_labels, rewards=total,
        components=components, advantages=advantages, zero_std=zero_std, truncated=result.truncated,
        correct=correct, timings={"generate": generated - start, "rewards": time.perf_counter() - generated},
    )


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def logprobs_in_chunks(
    backbone,
    rollout: Rollout,
    rows: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs ``(n, T)`` of answers ``rows`` (and entropies), under the caller's grad mode.

    Reuses the rollout's prompt embeddings: no audio-tower call.
    """
    return completion_scores(
        backbone, rollout.prompt, rollout.completion_ids[rows], rollout.completion_mask[rows],
        prompt_index=rollout.prompt_index[rows], temperature=temperature, with_entropy=with_entropy,
    )

"""GRPO rollouts: G sampled answers per prompt, their rewards and group advantages.

Orchestration of :mod:`emorl.lalm` and :mod:`emorl.rl` for :class:`emorl.models.grpo.GRPOLALM`:
:func:`sample_rollout` embeds the prompts once (each clip through the audio tower once), samples
``G`` answers per prompt from those embeddings (:class:`RolloutOptions`), scores them and computes
group advantages. The prompt embeddings are kept in the :class:`Rollout`, so every later log-prob
pass (old policy, reference, policy with grad: :func:`emorl.lalm.scoring.completion_scores`)
reuses them and the audio tower never runs again for this batch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from emorl.lalm.generation import compute_context, generate
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


@dataclass(frozen=True)
class RolloutOptions:
    """How a rollout samples and scores, built once by :class:`emorl.models.grpo.GRPOLALM` from its
    (flat) config keys.

    Attributes:
        num_generations: G answers per prompt.
        max_new_tokens: answer length limit.
        temperature / top_p: sampling.
        scale_rewards: ``group`` | ``batch`` | ``none`` (:func:`emorl.rl.advantages.group_advantages`).
        mask_truncated: answers cut at ``max_new_tokens`` count no token in the loss.
        min_new_tokens: forbid the end of an answer before this length (benchmarks: every answer
            then runs to ``max_new_tokens`` when both are equal); 0 = off.
    """

    num_generations: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    scale_rewards: str = "group"
    mask_truncated: bool = False
    min_new_tokens: int = 0

    def __post_init__(self) -> None:
        if int(self.num_generations) < 1:
            raise ValueError(f"num_generations must be >= 1 (G answers per prompt), not {self.num_generations}")
        if int(self.max_new_tokens) < 1:
            raise ValueError(f"max_new_tokens must be >= 1, not {self.max_new_tokens}")


def sample_rollout(
    backbone,
    messages: Sequence[list[dict]],
    clips: Sequence,
    labels: Sequence[str],
    rewards: RewardSet,
    context: RewardContext,
    options: RolloutOptions,
    *,
    gather_rewards: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rows: Sequence[Mapping | None] | None = None,
    reward_hook: RewardHook | None = None,
) -> Rollout:
    """Generate, score and compute advantages for one batch (no gradients).

    Under FSDP the policy is gathered once for the prompts (audio tower once per prompt) and the
    whole generation, and resharded after it (:meth:`emorl.lalm.backbone.Backbone.gathered`).

    ``gather_rewards``: a function that returns every rank's rewards concatenated (for
    ``scale_rewards="batch"`` under DDP); ``None`` uses the local ones. ``rows``: each prompt's
    manifest row (``batch["row"]``), handed to the rewards per answer as ``context.rows``.
    ``reward_hook``: an extra reward term (GRPO-PTR's reasoning reward), added to the total.

    ``Rollout.timings`` (seconds): ``prompt`` (processor features and the audio tower),
    ``decode`` and ``answers`` (:attr:`GenerationResult.timings`), ``generate`` (the three
    together) and ``rewards``.
    """
    g = options.num_generations
    start = _clock(backbone)
    with torch.no_grad(), compute_context(backbone, gathered=True):  # sharded: gathered once for both
        batch = build_prompts(backbone, messages, clips)
        prompt = embed_prompts(backbone, batch)
        embedded = _clock(backbone)
        result = generate(
            backbone, prompt, max_new_tokens=options.max_new_tokens, do_sample=True,
            temperature=options.temperature, top_p=options.top_p, num_return_sequences=g,
            min_new_tokens=options.min_new_tokens,
        )
    generated = time.perf_counter()
    answer_labels = [labels[int(i)] for i in result.prompt_index]
    context = dataclasses.replace(
        context, group_size=g, rows=[rows[int(i)] for i in result.prompt_index] if rows is not None else None,
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
    gathered = options.scale_rewards == "batch" and gather_rewards is not None
    advantages, zero_std = group_advantages(total, g, "none" if gathered else options.scale_rewards)
    if gathered:  # the batch std over every rank's rewards; this rank's rows of the result
        everything = gather_rewards(total)
        offset = _rank() * len(total)  # every rank samples the same number of answers
        advantages = group_advantages(everything, g, "batch")[0][offset : offset + len(total)]
    mask = result.completion_mask.clone()
    if options.mask_truncated:
        mask[result.truncated] = 0
    timings = {"prompt": embedded - start, **result.timings, "generate": generated - start,
               "rewards": time.perf_counter() - generated}
    return Rollout(
        prompt=prompt, prompt_index=result.prompt_index, completion_ids=result.completion_ids,
        completion_mask=mask, texts=result.texts, labels=answer_labels, rewards=total,
        components=components, advantages=advantages, zero_std=zero_std, truncated=result.truncated,
        correct=correct, timings=timings,
    )


def rollout_metrics(rollout: Rollout, alpha: float, in_format: Callable[[str], bool]) -> dict[str, torch.Tensor]:
    """What GRPO logs of a rollout (``train/...``): rewards and their components, the share of
    zero-std groups, accuracy, alpha, answer lengths, truncation, the phases' seconds and the share
    of answers ``in_format`` (the prompt's format, whatever the rewards)."""
    lengths = rollout.completion_mask.sum(-1).float()
    values = {
        "train/reward": rollout.rewards.mean(), "train/reward_std": rollout.rewards.std(),
        "train/zero_std_groups": rollout.zero_std.float().mean(), "train/accuracy": rollout.correct.float().mean(),
        "train/alpha": torch.tensor(alpha), "train/answer_length": lengths.mean(),
        "train/answer_length_max": lengths.max(), "train/truncated": rollout.truncated.float().mean(),
        "train/time_generate": torch.tensor(rollout.timings["generate"]),
        "train/time_rewards": torch.tensor(rollout.timings["rewards"]),
        "train/time_reference": torch.tensor(rollout.timings["reference"]),
    }
    for name, component in rollout.components.items():
        values[f"train/reward/{name}"] = component.mean()
        values[f"train/reward/{name}_std"] = component.std()
    values["train/format_rate"] = torch.tensor([float(in_format(t)) for t in rollout.texts]).mean()
    return values


def _clock(backbone) -> float:
    """``perf_counter`` once the backbone's device has finished its queued work (CUDA is asynchronous)."""
    device = getattr(backbone, "device", None)
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

"""EMO-RL's rewards: binary format rewards (IR / EUR / ESR) and accuracy rewards (BCR / ESWR).

A reward function takes the sampled answers, the true labels and a :class:`RewardContext` and
returns one float per answer. A :class:`RewardSet` is a weighted list of them, built from a config
such as ``[{name: format_esr, weight: 1.0}, {name: eswr, weight: 1.0}]`` (EMO-RL: R = R_format +
R_acc), so every reward ablation of the paper's Table 3 is a config. Names (:data:`REWARDS`):

- ``format_eur`` / ``format_esr``: 1 when the whole answer matches the format's regex
  (:mod:`emorl.prompts`), else 0;
- ``format_ir``: 1 when the whole answer matches IR's regex **and** its label is the true one
  (EMO-RL 3.3.1: for IR "the reward is granted only when the final answer is both correct and
  correctly delimited by <answer> tags"); ``format_ir_syntax`` is the regex alone;
- ``bcr``: binary classification reward, 1 when the predicted label is the true one;
- ``eswr``: emotion similarity-weighted reward (EMO-RL eq. 8): 1 when S(pred, true) = 1,
  ``alpha * S`` when S > gamma, else 0, with S from :mod:`emorl.rl.wheel`.

The predicted label of an answer (:func:`predicted_label`) is :func:`emorl.labels.parse_answer`'s
strict reading, the one evaluation uses for the tagged formats: the last ``<answer>...</answer>``
block, naming exactly one option (synonyms allowed); an answer without a block, or whose block
names no option or two different ones, predicts nothing and earns no accuracy reward
(``strict_answer=False``: the lenient reading of the zero-shot prompts).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from emorl.labels import parse_answer
from emorl.prompts import get_format
from emorl.rl.wheel import NEUTRAL_SIMILARITY, similarity

DEFAULT_GAMMA = 0.7


@dataclass
class RewardContext:
    """What rewards need besides the answers and labels.

    Attributes:
        classes: the label set's canonical names (the options the prompt listed).
        alpha: ESWR's partial-credit coefficient now (:mod:`emorl.rl.schedule`).
        gamma: ESWR's threshold (EMO-RL: 0.7).
        angles: wheel positions (``None``: :data:`emorl.rl.wheel.DEFAULT_ANGLES`).
        neutral_similarity: S(neutral, other) (EMO-RL: 1/2).
        strict_answer: the strict reading (:func:`emorl.labels.parse_answer`): the label from
            the last ``<answer>`` block only, naming exactly one option; ``False``: the lenient one.
        rows: each answer's manifest row (transcript, ``prosody``...), for rewards that read the
            clip (GRPO-PTR's judge); set per answer by
            :func:`emorl.rl.rollout.sample_rollout`, ``None`` when unknown.
        group_size: answers per prompt (G); answers are laid out prompt by prompt.
    """

    classes: Sequence[str]
    alpha: float = 1.0
    gamma: float = DEFAULT_GAMMA
    angles: Mapping[str, float | None] | None = None
    neutral_similarity: float = NEUTRAL_SIMILARITY
    strict_answer: bool = True
    rows: Sequence[Mapping | None] | None = None
    group_size: int = 1


def predicted_label(text: str | None, classes: Sequence[str], strict: bool = True) -> str | None:
    """The label an answer gives (``None``: none): :func:`emorl.labels.parse_answer`, strict or lenient."""
    return parse_answer(text, classes, reading="strict" if strict else "lenient")


def eswr(
    predicted: str | None,
    true: str,
    alpha: float,
    gamma: float = DEFAULT_GAMMA,
    angles: Mapping[str, float | None] | None = None,
    neutral_similarity: float = NEUTRAL_SIMILARITY,
) -> float:
    """EMO-RL eq. 8 for one answer: 1 if S == 1, ``alpha * S`` if S > gamma, else 0 (and 0 for no label)."""
    if predicted is None:
        return 0.0
    score = similarity(predicted, true, angles, neutral_similarity)
    if score == 1.0:
        return 1.0
    return float(alpha * score) if score > gamma else 0.0


RewardFn = Callable[[Sequence[str], Sequence[str], RewardContext], list[float]]


def _format_reward(format_name: str) -> RewardFn:
    fmt = get_format(format_name)

    def reward(completions: Sequence[str], labels: Sequence[str], context: RewardContext) -> list[float]:
        return [1.0 if fmt.matches(text) else 0.0 for text in completions]

    reward.__name__ = f"format_{format_name}"
    reward.__doc__ = f"1 when the whole answer matches the {format_name.upper()} format, else 0."
    return reward


def format_ir_reward(completions: Sequence[str], labels: Sequence[str], context: RewardContext) -> list[float]:
    """EMO-RL's IR format reward: 1 when the answer is exactly ``<answer>label</answer>`` with the true label."""
    fmt = get_format("ir")
    return [
        1.0 if fmt.matches(text) and predicted_label(text, context.classes, strict=True) == label else 0.0
        for text, label in zip(completions, labels, strict=True)
    ]


def bcr_reward(completions: Sequence[str], labels: Sequence[str], context: RewardContext) -> list[float]:
    """Binary classification reward: 1 when the predicted label is the true one, else 0."""
    return [
        1.0 if predicted_label(text, context.classes, context.strict_answer) == label else 0.0
        for text, label in zip(completions, labels, strict=True)
    ]


def eswr_reward(completions: Sequence[str], labels: Sequence[str], context: RewardContext) -> list[float]:
    """Emotion similarity-weighted reward (:func:`eswr`) of every answer."""
    return [
        eswr(predicted_label(text, context.classes, context.strict_answer), label, context.alpha,
             context.gamma, context.angles, context.neutral_similarity)
        for text, label in zip(completions, labels, strict=True)
    ]


REWARDS: dict[str, RewardFn] = {
    "format_ir": format_ir_reward,
    "format_ir_syntax": _format_reward("ir"),
    "format_eur": _format_reward("eur"),
    "format_esr": _format_reward("esr"),
    "bcr": bcr_reward,
    "eswr": eswr_reward,
}


@dataclass
class RewardSpec:
    """One term of the total reward: a name of :data:`REWARDS` and its weight."""

    name: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in REWARDS:
            raise ValueError(f"unknown reward {self.name!r}; choose from {', '.join(REWARDS)}")


@dataclass
class RewardSet:
    """A weighted sum of reward functions; ``__call__`` returns the total and each component."""

    specs: list[RewardSpec] = field(default_factory=list)

    @classmethod
    def from_config(cls, items: Sequence[RewardSpec | Mapping | str]) -> RewardSet:
        """From ``[{"name": "format_esr", "weight": 1.0}, "eswr", ...]`` (a bare name weighs 1)."""
        specs = []
        for item in items:
            if isinstance(item, RewardSpec):
                specs.append(item)
            elif isinstance(item, str):
                specs.append(RewardSpec(item))
            else:
                unknown = set(item) - {"name", "weight"}
                if unknown:
                    raise ValueError(f"reward entry {dict(item)} has unknown keys {sorted(unknown)}")
                specs.append(RewardSpec(str(item["name"]), float(item.get("weight", 1.0))))
        if not specs:
            raise ValueError("the reward list is empty: name at least one of " + ", ".join(REWARDS))
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"a reward is listed twice: {names}")
        return cls(specs)

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def __call__(
        self, completions: Sequence[str], labels: Sequence[str], context: RewardContext
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total (N,), {name: (N,) unweighted})`` for N answers, float32."""
        if len(completions) != len(labels):
            raise ValueError(f"{len(completions)} answers but {len(labels)} labels")
        components = {
            spec.name: torch.tensor(REWARDS[spec.name](completions, labels, context), dtype=torch.float32)
            for spec in self.specs
        }
        total = torch.zeros(len(completions), dtype=torch.float32)
        for spec in self.specs:
            total += spec.weight * components[spec.name]
        return total, components

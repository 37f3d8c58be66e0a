"""GRPO-PTR (EmotionThinker): a progressive, trust-aware reasoning reward.

The reward of answer ``i`` of group ``g`` (the G answers to one prompt)::

    r_i = w_format * format_i + w_outcome * outcome_i + on * w_reason * tau_g * reasoning_i

- ``format_i`` / ``outcome_i``: rule-based rewards of :mod:`emorl.rl.rewards` (EmotionThinker:
  the think / answer format and the right label);
- ``reasoning_i`` in ``[0, 1]``: the judge's mean score over the rubric (:mod:`emorl.rl.judge`);
- ``tau_g`` (:func:`trust_weight`): 1 when the correct answers of the group reason at least as
  well, on average, as the wrong ones; else ``exp(mean_correct - mean_wrong)`` (< 1), so a group
  whose good reasoning goes with wrong answers gets less reasoning reward. A group with no
  correct answer, or no wrong one, has nothing to compare: ``tau = 1``;
- ``on`` (:class:`ProgressiveSwitch`): 0 until the running training accuracy reaches the
  threshold, then 1.

"Correct" is the rollout's ``predicted label == true label`` (an ESWR partial credit is not
correct).

The pure parts (:func:`trust_weight`, :func:`reasoning_term`, :class:`ProgressiveSwitch`, ...) are
combined by :class:`PTRRewards`, the object :class:`emorl.models.grpo.GRPOLALM` holds when ``ptr:``
is set (not an ``nn.Module``: the judge's weights are never trained, never moved by Lightning and
never saved in checkpoints). Per training batch:

1. :meth:`PTRRewards.hook` runs inside :func:`emorl.rl.rollout.sample_rollout`, after the
   rule-based rewards (``w_format * format + w_outcome * outcome``, a
   :class:`emorl.rl.rewards.RewardSet` built from :meth:`PTRConfig.reward_list`) and before the
   advantages. When the switch is on (or ``judge_when_off``) it has the judge grade every answer
   against its clip's row, computes each group's trust weight and returns
   ``on * w_reason * tau * reasoning`` and the ``reasoning`` component (unweighted judge mean);
2. :meth:`PTRRewards.observe` adds the rollout's correct / total answers, summed over the DDP
   ranks, to the progressive switch (so the next batch's decision includes this one);
3. :meth:`PTRRewards.log_values` gives what to log.
"""

from __future__ import annotations

import functools
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields

import torch

from emorl.rl.judge import Judge
from emorl.rl.rewards import RewardContext

#: EmotionThinker's weights as given in public summaries (w_format, w_outcome, w_reason) and its threshold.
PUBLISHED_WEIGHTS = (0.3, 1.0, 0.5)
PUBLISHED_THRESHOLD = 0.5


@dataclass
class PTRConfig:
    """GRPO-PTR's settings (the ``ptr:`` entry of a GRPO config).

    Attributes:
        w_format / w_outcome / w_reason: the three weights (EmotionThinker: 0.3 / 1.0 / 0.5).
        format / outcome: names of the format and outcome rewards (:data:`emorl.rl.rewards.REWARDS`).
        accuracy_threshold: the reasoning term switches on when the running accuracy is >= this.
        accuracy_window: the running accuracy is over the last this-many rollouts (training
            batches), over every DDP rank.
        latch: once on, stay on (the default); ``false`` lets the term switch off again when the
            running accuracy drops below the threshold.
        judge_when_off: also call the judge while the term is off (its scores are logged, not
            rewarded: costs a judge pass per batch).
    """

    w_format: float = PUBLISHED_WEIGHTS[0]
    w_outcome: float = PUBLISHED_WEIGHTS[1]
    w_reason: float = PUBLISHED_WEIGHTS[2]
    format: str = "format_eur"
    outcome: str = "bcr"
    accuracy_threshold: float = PUBLISHED_THRESHOLD
    accuracy_window: int = 16
    latch: bool = True
    judge_when_off: bool = False

    def __post_init__(self) -> None:
        from emorl.rl.rewards import REWARDS

        for name in (self.format, self.outcome):
            if name not in REWARDS:
                raise ValueError(f"ptr: unknown reward {name!r}; choose from {', '.join(REWARDS)}")
        if self.format == self.outcome:
            raise ValueError(f"ptr: format and outcome are the same reward {self.format!r}")
        if int(self.accuracy_window) < 1:
            raise ValueError(f"ptr.accuracy_window must be >= 1, got {self.accuracy_window}")
        if not 0.0 <= float(self.accuracy_threshold) <= 1.0:
            raise ValueError(f"ptr.accuracy_threshold must be in [0, 1], got {self.accuracy_threshold}")

    @classmethod
    def from_dict(cls, values: Mapping | None) -> PTRConfig:
        """From a config mapping; unknown keys are an error naming them."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"ptr: unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def reward_list(self) -> list[dict]:
        """The rule-based part as a :class:`emorl.rl.rewards.RewardSet` config."""
        return [{"name": self.format, "weight": self.w_format}, {"name": self.outcome, "weight": self.w_outcome}]


def trust_weight(reasoning: Sequence[float], correct: Sequence[bool]) -> float:
    """tau of one group: 1 if mean reasoning of correct answers >= of wrong ones, else exp(difference).

    A group without a correct answer, or without a wrong one, gives 1 (nothing to compare).
    """
    if len(reasoning) != len(correct):
        raise ValueError(f"{len(reasoning)} reasoning scores but {len(correct)} correctness flags")
    right = [float(r) for r, c in zip(reasoning, correct) if c]
    wrong = [float(r) for r, c in zip(reasoning, correct) if not c]
    if not right or not wrong:
        return 1.0
    gap = sum(right) / len(right) - sum(wrong) / len(wrong)
    return 1.0 if gap >= 0 else math.exp(gap)


def group_trust_weights(reasoning: torch.Tensor, correct: torch.Tensor, group_size: int) -> torch.Tensor:
    """tau of every group ``(P,)`` of answers laid out prompt by prompt (``(P * G,)`` inputs)."""
    if reasoning.dim() != 1 or reasoning.shape != correct.shape or reasoning.numel() % group_size:
        raise ValueError(f"reasoning {tuple(reasoning.shape)} and correct {tuple(correct.shape)} must be 1-D, "
                         f"equal, and a multiple of group_size={group_size}")
    scores = reasoning.detach().float().view(-1, group_size).tolist()
    flags = correct.bool().view(-1, group_size).tolist()
    return torch.tensor([trust_weight(s, c) for s, c in zip(scores, flags)], dtype=torch.float32)


def total_reward(
    format_reward: torch.Tensor,
    outcome_reward: torch.Tensor,
    reasoning: torch.Tensor,
    tau: torch.Tensor,
    on: bool,
    w_format: float = PUBLISHED_WEIGHTS[0],
    w_outcome: float = PUBLISHED_WEIGHTS[1],
    w_reason: float = PUBLISHED_WEIGHTS[2],
) -> torch.Tensor:
    """``w_format * format + w_outcome * outcome + on * w_reason * tau * reasoning``, all ``(N,)``.

    ``tau`` is per answer (its group's weight repeated G times: :func:`reasoning_term`).
    """
    total = w_format * format_reward.float() + w_outcome * outcome_reward.float()
    return total + reasoning_term(reasoning, tau, on, w_reason)


def reasoning_term(reasoning: torch.Tensor, tau: torch.Tensor, on: bool, w_reason: float) -> torch.Tensor:
    """``w_reason * tau * reasoning`` when on, else zeros; ``tau`` per answer ``(N,)`` or per group ``(P,)``."""
    reasoning = reasoning.float()
    if not on:
        return torch.zeros_like(reasoning)
    if tau.numel() != reasoning.numel():  # one weight per group: repeat it for its G answers
        if reasoning.numel() % tau.numel():
            raise ValueError(f"{tau.numel()} group weights do not divide {reasoning.numel()} answers")
        tau = tau.repeat_interleave(reasoning.numel() // tau.numel())
    return float(w_reason) * tau.float() * reasoning


class ProgressiveSwitch:
    """Turns the reasoning term on once the running training accuracy reaches a threshold.

    The running accuracy is correct answers over all answers of the last ``window`` rollouts
    (each rollout's counts summed over the DDP ranks by the caller, so every rank holds the same
    history and takes the same decision). The switch is decided from the history only: a
    rollout's reward uses :attr:`on` as it was before :meth:`update` adds that rollout. It can
    turn on only once the window is full (a few lucky early batches do not count), when the
    running accuracy is ``>= threshold``. With ``latch`` (default) it then stays on; without, a
    full window below the threshold turns it off again.
    """

    def __init__(self, threshold: float, window: int, latch: bool = True) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.threshold = float(threshold)
        self.window = int(window)
        self.latch = bool(latch)
        self.history: deque[tuple[int, int]] = deque(maxlen=self.window)
        self.on = False
        self.switched_on_at: int | None = None  # rollouts seen when it (last) turned on
        self.rollouts = 0

    @property
    def running_accuracy(self) -> float | None:
        """Correct over all answers in the window; ``None`` before any rollout."""
        total = sum(n for _, n in self.history)
        return sum(c for c, _ in self.history) / total if total else None

    def update(self, correct: int, total: int) -> bool:
        """Add one rollout's counts (all ranks) and decide; returns :attr:`on`."""
        if total < 0 or not 0 <= correct <= max(total, 0):
            raise ValueError(f"bad counts: {correct} correct of {total}")
        self.history.append((int(correct), int(total)))
        self.rollouts += 1
        accuracy = self.running_accuracy
        if len(self.history) == self.window and accuracy is not None:
            if not self.on and accuracy >= self.threshold:
                self.on, self.switched_on_at = True, self.rollouts
            elif self.on and not self.latch and accuracy < self.threshold:
                self.on = False
        return self.on

    def state_dict(self) -> dict:
        return {"threshold": self.threshold, "window": self.window, "latch": self.latch, "on": self.on,
                "history": [list(item) for item in self.history], "rollouts": self.rollouts,
                "switched_on_at": self.switched_on_at}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore the history and the state (the configured threshold, window and latch stay)."""
        self.history = deque((tuple(int(v) for v in item) for item in state.get("history", [])),
                             maxlen=self.window)
        self.on = bool(state.get("on", False))
        self.rollouts = int(state.get("rollouts", len(self.history)))
        self.switched_on_at = state.get("switched_on_at")


# -- inside GRPOLALM: the judge, the switch, the reasoning term --------------------------------------
JUDGE_KEYS = ("model", "dtype", "device", "batch_size", "max_new_tokens")


def build_judge(options: Mapping | None, class_names: Sequence[str]) -> Judge:
    """A :class:`Judge` from the ``judge:`` config entry (``model`` required)."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(JUDGE_KEYS))
    if unknown:
        raise ValueError(f"judge: unknown key(s) {unknown}; known: {list(JUDGE_KEYS)}")
    if not options.get("model"):
        raise ValueError("ptr needs a judge: set judge: {model: PATH_TO_A_LOCAL_INSTRUCT_LM}")
    return Judge(label_options=class_names, **options)


class PTRRewards:
    """GRPO-PTR's state and reward term for one GRPO module.

    Args:
        config: the ``ptr:`` settings.
        judge: a :class:`Judge` (or anything with ``score(answers, rows)`` and the counters).

    The judge follows the policy's device (:meth:`hook_on`) unless its config fixed one; under FSDP
    it is sharded over the policy's data-parallel ranks instead (:meth:`Judge.shard_over`, called by
    ``GRPOLALM.configure_model``) and gathered once per judging call.
    """

    def __init__(self, config: PTRConfig, judge) -> None:
        self.config = config
        self.judge = judge
        self.follow_device = getattr(judge, "device", None) is None
        self.switch = ProgressiveSwitch(config.accuracy_threshold, config.accuracy_window, config.latch)
        self.last: dict = {}

    @classmethod
    def from_options(cls, ptr: Mapping, judge: Mapping | None, class_names: Sequence[str]) -> PTRRewards:
        return cls(PTRConfig.from_dict(ptr), build_judge(judge, class_names))

    def reward_list(self) -> list[dict]:
        return self.config.reward_list()

    def hook_on(self, device: torch.device | str):
        """The reward hook for :func:`emorl.rl.rollout.sample_rollout`, judging on ``device``."""
        return functools.partial(self.hook, device=device)

    def _place_judge(self, device) -> None:
        if self.follow_device and device is not None and hasattr(self.judge, "to"):
            device = torch.device(device)
            if getattr(self.judge, "device", None) != device:
                self.judge.to(device)

    def hook(
        self, texts: Sequence[str], labels: Sequence[str], correct: torch.Tensor, context: RewardContext,
        device: torch.device | str | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The reasoning term ``(N,)`` and ``{"reasoning": (N,)}`` (empty when the judge is not called)."""
        on = self.switch.on
        self.last = {"on": on}
        if not (on or self.config.judge_when_off):
            return torch.zeros(len(texts)), {}
        self._place_judge(device)
        rows = list(context.rows) if context.rows is not None else [None] * len(texts)
        unparsable_before = self.judge.unparsable
        start = time.perf_counter()
        scores = self.judge.score(list(texts), rows)
        reasoning = torch.tensor([s.mean for s in scores], dtype=torch.float32)
        tau = group_trust_weights(reasoning, correct, context.group_size)
        self.last.update(
            tau=tau, answers=len(scores), unparsable=self.judge.unparsable - unparsable_before,
            seconds=time.perf_counter() - start,
            criteria={name: torch.tensor([s.scores[name] for s in scores]) for name in scores[0].scores} if scores else {},
        )
        return reasoning_term(reasoning, tau, on, self.config.w_reason), {"reasoning": reasoning}

    def observe(self, correct: torch.Tensor, gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> bool:
        """Add a rollout's correct / total answers (summed over ranks with ``gather``) to the switch."""
        counts = torch.tensor([int(correct.sum()), correct.numel()], dtype=torch.long)
        if gather is not None:
            counts = gather(counts).reshape(-1, 2).sum(dim=0)
        return self.switch.update(int(counts[0]), int(counts[1]))

    def log_values(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(means, counts)`` of the last batch: means are averaged over ranks, counts summed."""
        accuracy = self.switch.running_accuracy
        means = {"train/ptr/on": torch.tensor(float(self.last.get("on", False))),
                 "train/ptr/running_accuracy": torch.tensor(accuracy if accuracy is not None else 0.0)}
        counts: dict[str, torch.Tensor] = {}
        if "tau" in self.last:
            means["train/ptr/tau"] = self.last["tau"].mean()
            means["train/time_judge"] = torch.tensor(self.last["seconds"])
            for name, values in self.last["criteria"].items():
                means[f"train/judge/{name}"] = values.mean()
            counts["train/judge/answers"] = torch.tensor(float(self.last["answers"]))
            counts["train/judge/unparsable"] = torch.tensor(float(self.last["unparsable"]))
        return means, counts

    def state_dict(self) -> dict:
        return {"switch": self.switch.state_dict()}

    def load_state_dict(self, state: Mapping) -> None:
        self.switch.load_state_dict(state.get("switch", {}))

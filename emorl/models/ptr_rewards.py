"""GRPO-PTR inside :class:`emorl.models.grpo.GRPOLALM`: the judge, the switch, the reasoning term.

A plain helper object the module holds (not an ``nn.Module``: the judge's weights are never
trained, never moved by Lightning and never saved in checkpoints). Per training batch:

1. :meth:`PTRRewards.hook` runs inside :func:`emorl.models.rollout.sample_rollout`, after the
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
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from emorl.rl.judge import Judge
from emorl.rl.ptr import PTRConfig, ProgressiveSwitch, group_trust_weights, reasoning_term
from emorl.rl.rewards import RewardContext

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

    The judge follows the policy's device (:meth:`hook_on`) unless its config fixed one.
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
        """The reward hook for :func:`emorl.models.rollout.sample_rollout`, judging on ``device``."""
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

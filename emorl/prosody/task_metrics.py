"""Accuracy of prosody descriptions per dimension, summed over batches and DDP ranks.

:class:`DescriptionAccuracy` keeps three counts per dimension of :data:`emorl.prosody.task.DIMENSIONS`
as torchmetrics states reduced by ``sum`` (so every rank computes the same global value):

- ``known``: clips whose bin is low / normal / high (unknown bins are not scored);
- ``correct``: of those, descriptions that name the measured level (:func:`score_description`);
- ``named``: of those, descriptions that name some level of the dimension at all.

``compute()`` gives ``{dim}_acc`` (correct / known), ``mean_acc`` (the mean of the dimensions'
accuracies that have a known clip), ``named_rate`` (named / known over all dimensions) and
``clips`` (clips with at least one known bin). Chance is 1/3 per dimension (three levels, equal
tertiles); a model that never names a level scores 0.

The accuracies read descriptions in the trained wording (:func:`read_description`). Beside them,
``faithfulness`` is :func:`emorl.prosody.claims.faithfulness` summed over the clips (agreeing
claims / checkable claims, micro): it reads any wording the claims reader knows ("a deep,
quiet voice"), so it also scores a model that describes the voice in its own words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torchmetrics

from emorl.prosody.claims import faithfulness
from emorl.prosody.task import DIMENSIONS, known_levels, read_description, score_description


class DescriptionAccuracy(torchmetrics.Metric):
    """Per-dimension share of descriptions whose level matches the clip's measured bin."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        n = len(DIMENSIONS)
        self.add_state("known", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("named", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("clips", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("agreeing", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("checkable", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, texts: Sequence[str], bins: Sequence[Mapping[str, str] | None]) -> None:
        if len(texts) != len(bins):
            raise ValueError(f"{len(texts)} descriptions for {len(bins)} clips")
        for text, clip_bins in zip(texts, bins):
            scores = score_description(text, clip_bins)
            said = read_description(text)
            if not known_levels(clip_bins):
                continue
            self.clips += 1
            claims = faithfulness(text, clip_bins)
            self.agreeing += claims.agreeing
            self.checkable += claims.agreeing + claims.contradicting
            for i, dim in enumerate(DIMENSIONS):
                if scores[dim] is None:
                    continue
                self.known[i] += 1
                self.correct[i] += scores[dim]
                self.named[i] += int(dim in said)

    def compute(self) -> dict[str, torch.Tensor]:
        known = self.known.float()
        accuracy = self.correct.float() / known.clamp(min=1)
        out = {f"{dim}_acc": accuracy[i] for i, dim in enumerate(DIMENSIONS) if self.known[i] > 0}
        scored = self.known > 0
        if scored.any():
            out["mean_acc"] = accuracy[scored].mean()
            out["named_rate"] = self.named.sum().float() / known.sum()
        if self.checkable > 0:
            out["faithfulness"] = self.agreeing.float() / self.checkable.float()
        out["clips"] = self.clips.float()
        return out

"""Explanation evaluation in ``emorl test``: prosody faithfulness and judge scores per test set.

    trainer:
      callbacks:
        - class_path: emorl.explanations.ExplanationEvaluation
          init_args: {faithfulness: true, judge: {model: /models/Qwen2.5-7B-Instruct}}

:class:`ExplanationEvaluation` is a Lightning callback for any audio-language module (zero-shot,
SFT, GRPO): their ``test_step`` returns the answers (:func:`emorl.models.evaluation.test_batch`),
and the callback scores each one against its clip's manifest row:

- **prosody faithfulness**, no model needed: the answer's claims about pitch / loudness / rate
  (:func:`emorl.prosody.claims.faithfulness`) checked against the clip's measured bins
  (``row["prosody"]["bins"]``, written by ``emorl data prosody``);
- **judge scores** when ``judge`` is set: a local text LM grades every answer on
  :data:`emorl.rl.judge.RUBRIC` (:class:`emorl.rl.judge.Judge`).

Per test set it logs ``test/<set>/explain/...`` (definitions: :func:`summarise`; every ratio is
computed from numerators and denominators summed over DDP ranks, :func:`reduce_counts`), writes
one JSON line per answer to ``<log_dir>/explanations/<set>.jsonl`` and keeps a table that
``emorl test`` prints after the UA / WA / F1 one (:meth:`ExplanationEvaluation.results_table`).
``docs/explanations.md`` has the details.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

from emorl.prosody.claims import LEVELS, extract_claims
from emorl.prosody.claims import faithfulness as check_claims
from emorl.rl.judge import RUBRIC, Judge, JudgeScores

log = logging.getLogger(__name__)

#: The judge criteria, in the rubric's order (the names logged under ``explain/judge/``).
CRITERIA: tuple[str, ...] = tuple(c.name for c in RUBRIC)

#: Table headings of the logged names (any other name is its own heading).
HEADINGS = {"faithfulness": "faithful", "claim_rate": "claimed", "claims_per_answer": "claims/ans",
            "judge/prosody_alignment": "j:prosody", "judge/interpretation": "j:interp",
            "judge/completeness": "j:complete", "judge/fluency": "j:fluency", "judge/mean": "judge",
            "judge_unparsable": "unparsable"}
#: Logged names that are not shares (printed as they are, not in percent).
PLAIN = {"claims_per_answer": "{:.2f}", "judge_unparsable": "{:.0f}"}


# -- one answer -----------------------------------------------------------------------------------
def prosody_bins(row: Mapping | None) -> dict | None:
    """The clip's measured bins (``row["prosody"]["bins"]``), ``None`` when its corpus was not measured."""
    prosody = (row or {}).get("prosody")
    bins = prosody.get("bins") if isinstance(prosody, Mapping) else None
    return dict(bins) if isinstance(bins, Mapping) and bins else None


def score_answer(text: str, row: Mapping | None) -> dict[str, Any]:
    """One answer's claims and their agreement with its clip's bins (JSON-ready).

    ``measured`` says whether the clip has bins; without them the claims are listed but none is
    checked (``agreeing`` ... ``faithfulness`` are ``None``).
    """
    bins = prosody_bins(row)
    if bins is None:
        claims = extract_claims(text or "")
        return {"measured": False, "claims": [_claim(c, None) for c in claims], "agreeing": None,
                "contradicting": None, "unverifiable": None, "faithfulness": None}
    result = check_claims(text or "", bins)
    return {"measured": True, "claims": [_claim(c, bins) for c in result.claims], "agreeing": int(result.agreeing),
            "contradicting": int(result.contradicting), "unverifiable": int(result.unverifiable),
            "faithfulness": result.score}


def _claim(claim, bins: Mapping | None) -> dict[str, str | None]:
    """A claim as JSON, with its verdict against ``bins`` (``None`` without bins), as
    :func:`emorl.prosody.claims.faithfulness` counts it."""
    verdict = None
    if bins is not None:
        measured = bins.get(claim.dimension)
        verdict = "unverifiable" if measured not in LEVELS else "agrees" if measured == claim.level else "contradicts"
    return {"dimension": claim.dimension, "level": claim.level, "text": claim.text, "verdict": verdict}


def judge_record(scores: JudgeScores) -> dict[str, Any]:
    """One answer's judge grades (JSON-ready): the criteria found (``[0, 1]``) and the missing ones."""
    missing = list(scores.missing)
    return {"scores": {k: v for k, v in scores.scores.items() if k not in missing}, "missing": missing,
            "parsed": bool(scores.parsed)}


# -- a test set: numerators and denominators ---------------------------------------------------------
def count_answers(records: Sequence[Mapping], criteria: Sequence[str] = CRITERIA) -> dict[str, float]:
    """The sums every logged ratio is made of, over ``records`` (:func:`score_answer` dicts, plus
    ``"judge"``: a :func:`judge_record` or ``None``). The same keys whatever the records, so ranks
    can sum them element-wise.

    ``answers``; ``claims`` (all claims, checked or not); ``measured`` (answers whose clip has
    bins); ``agreeing`` / ``contradicting`` / ``unverifiable`` (claims of measured answers);
    ``answers_checkable`` (measured answers with at least one agreeing or contradicting claim);
    ``judged`` / ``judge_unparsable`` (answers graded / with a criterion missing);
    ``judge_sum/<c>`` and ``judge_n/<c>`` (sum and number of the grades found for criterion c).
    """
    counts = dict.fromkeys(("answers", "claims", "measured", "agreeing", "contradicting", "unverifiable",
                            "answers_checkable", "judged", "judge_unparsable"), 0.0)
    for c in criteria:
        counts[f"judge_sum/{c}"] = counts[f"judge_n/{c}"] = 0.0
    for record in records:
        counts["answers"] += 1
        counts["claims"] += len(record.get("claims") or ())
        if record.get("measured"):
            counts["measured"] += 1
            for name in ("agreeing", "contradicting", "unverifiable"):
                counts[name] += record[name]
            counts["answers_checkable"] += (record["agreeing"] + record["contradicting"]) > 0
        judge = record.get("judge")
        if judge is not None:
            counts["judged"] += 1
            counts["judge_unparsable"] += not judge["parsed"]
            for c, score in judge["scores"].items():
                if c in criteria:
                    counts[f"judge_sum/{c}"] += score
                    counts[f"judge_n/{c}"] += 1
    return counts


def reduce_counts(counts: Mapping[str, float], sum_over_ranks: Callable[[torch.Tensor], torch.Tensor],
                  device: torch.device | str = "cpu") -> dict[str, float]:
    """``counts`` summed over every rank: one ``sum_over_ranks`` call (an all-reduce) on a vector
    of the values in sorted key order. Every rank must pass the same keys."""
    keys = sorted(counts)
    vector = torch.tensor([float(counts[k]) for k in keys], dtype=torch.float64, device=device)
    total = sum_over_ranks(vector).double().cpu().tolist()
    return dict(zip(keys, total))


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def summarise(counts: Mapping[str, float], faithfulness: bool = True, judge: bool = False,
              criteria: Sequence[str] = CRITERIA) -> dict[str, float]:
    """The logged scores of a test set (names under ``test/<set>/explain/``) from its summed counts.

    - ``faithfulness`` = agreeing / (agreeing + contradicting) claims over the set (micro; claims
      on a dimension whose bin is ``unknown`` are unverifiable and left out); absent when no
      answer's clip has bins or no claim could be checked;
    - ``claim_rate`` = measured answers with a checkable claim / measured answers; absent without bins;
    - ``claims_per_answer`` = claims about pitch / loudness / rate / answers (checked or not);
    - ``judge/<criterion>`` = mean grade (``[0, 1]``) over the answers whose reply had that
      criterion; ``judge/mean`` = the mean of those criterion means; ``judge_unparsable`` = the
      number of answers whose reply missed a criterion.

    A score with a zero denominator is left out (never 0, never NaN).
    """
    scores: dict[str, float | None] = {}
    if faithfulness:
        checkable = counts["agreeing"] + counts["contradicting"]
        scores["faithfulness"] = _ratio(counts["agreeing"], checkable)
        scores["claim_rate"] = _ratio(counts["answers_checkable"], counts["measured"])
        scores["claims_per_answer"] = _ratio(counts["claims"], counts["answers"])
    if judge and counts["judged"] > 0:
        means = {c: _ratio(counts[f"judge_sum/{c}"], counts[f"judge_n/{c}"]) for c in criteria}
        scores.update({f"judge/{c}": v for c, v in means.items()})
        found = [v for v in means.values() if v is not None]
        scores["judge/mean"] = sum(found) / len(found) if found else None
        scores["judge_unparsable"] = counts["judge_unparsable"]
    return {k: float(v) for k, v in scores.items() if v is not None}


def format_explanation_table(results: Mapping[str, Mapping[str, float]]) -> str:
    """A plain-text table, one row per test set: shares in percent, claims per answer and the
    unparsable count as they are, ``-`` where a score is absent. Only columns some set has."""
    order = [*HEADINGS, *sorted({k for scores in results.values() for k in scores} - set(HEADINGS))]
    columns = [c for c in order if any(c in scores for scores in results.values())]

    def cell(scores: Mapping[str, float], column: str) -> str:
        if column not in scores:
            return "-"
        return PLAIN[column].format(scores[column]) if column in PLAIN else f"{100 * scores[column]:.2f}"

    header = ["explanations", *(HEADINGS.get(c, c) for c in columns)]
    rows = [[str(name), *(cell(scores, c) for c in columns)] for name, scores in results.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *(line(row) for row in rows)])


def judge_arguments(judge: Mapping[str, Any]) -> dict[str, Any]:
    """Check the ``judge`` option against :class:`emorl.rl.judge.Judge`'s arguments (a clear error
    for a missing ``model`` or an unknown key) and return it as a dict."""
    if not isinstance(judge, Mapping) or not judge.get("model"):
        raise ValueError(f"judge must be a mapping with at least `model` (a local folder), got {judge!r}")
    allowed = set(inspect.signature(Judge).parameters) - {"criteria"}
    unknown = sorted(set(judge) - allowed)
    if unknown:
        raise ValueError(f"unknown judge option(s) {unknown}; allowed: {sorted(allowed)}")
    return dict(judge)


def _file_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name)


# -- the callback -------------------------------------------------------------------------------------
class ExplanationEvaluation(L.Callback):
    """Score the test answers' explanations per test set: prosody faithfulness and judge grades.

    Args:
        faithfulness: check the answers' pitch / loudness / rate claims against the clips' bins
            (a corpus without bins: not scored, one warning naming ``emorl data prosody``).
        judge: :class:`emorl.rl.judge.Judge`'s arguments (``model``: a local folder; ``dtype``,
            ``device`` (default: the tested model's), ``batch_size``, ``max_new_tokens``,
            ``label_options`` (default: the module's class names)); ``None``: no judge.
        write_jsonl: write each answer's claims and grades to ``<log_dir>/explanations/<set>.jsonl``
            (``<set>.rank<r>.jsonl`` per rank under DDP).

    After a test, ``results`` holds ``{set: {score: value}}`` and :meth:`results_table` its table.
    """

    def __init__(self, faithfulness: bool = True, judge: dict | None = None, write_jsonl: bool = True) -> None:
        super().__init__()
        self.faithfulness = bool(faithfulness)
        self.judge_options = judge_arguments(judge) if judge is not None else None
        self.write_jsonl = bool(write_jsonl)
        self.judge: Judge | None = None
        self.records: dict[str, list[dict]] = {}
        self.results: dict[str, dict[str, float]] = {}

    # -- hooks ----------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "test" and self.judge_options is not None:
            folder = Path(self.judge_options["model"])
            if not (folder / "config.json").is_file():  # fail before the test's generation, not after it
                raise FileNotFoundError(f"judge model {folder} not found (expected a local folder with config.json)")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.records, self.results = {}, {}

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch is None:
            return  # every clip of the batch was undecodable
        if not isinstance(outputs, Mapping) or "texts" not in outputs:
            raise TypeError(
                f"ExplanationEvaluation needs the answers of the test step, but {type(pl_module).__name__}'s "
                "test_step returns none: it works with the audio-language modules (ZeroShotLALM, SFTLALM, GRPOLALM)"
            )
        name = outputs.get("test_set") or trainer.datamodule.test_names[dataloader_idx]
        names = list(getattr(pl_module.hparams, "class_names", []) or [])
        texts = list(outputs["texts"])
        rows = list(batch.get("row") or [None] * len(texts))
        preds = list(outputs.get("preds") or [None] * len(texts))
        target = batch["label"].tolist()
        records = self.records.setdefault(name, [])
        for key, text, row, pred, label in zip(batch["key"], texts, rows, preds, target):
            record = {"key": key, "label": _class(names, label), "prediction": _class(names, pred), "text": text,
                      "row": row}
            if self.faithfulness:
                record.update(score_answer(text, row))
            records.append(record)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # every rank walks the same sets in the same order (the DataModule's, not the sets this rank
        # happened to see): each set's counts are all-reduced, so a skipped set would hang the others
        datamodule = getattr(trainer, "datamodule", None)
        names = list(getattr(datamodule, "test_names", None) or sorted(self.records))
        for name in names:
            records = self.records.get(name, [])
            if self.judge_options is not None:
                self._judge_set(pl_module, records)
            counts = reduce_counts(count_answers(records),
                                   lambda t: trainer.strategy.reduce(t, reduce_op="sum"), pl_module.device)
            if counts["answers"] == 0:
                continue
            scores = summarise(counts, self.faithfulness, self.judge_options is not None)
            if trainer.is_global_zero:
                self._warn_unmeasured(name, counts, datamodule)
            for key, value in scores.items():
                pl_module.log(f"test/{name}/explain/{key}", value, sync_dist=True)  # equal on every rank
            self.results[name] = scores
            if self.write_jsonl:
                self._write(trainer, name, records)
        self.records = {}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.judge = None  # the judge's weights leave memory with the test

    # -- helpers --------------------------------------------------------------------------------------
    def _judge_set(self, pl_module: L.LightningModule, records: list[dict]) -> None:
        if not records:
            return
        if self.judge is None:
            options = dict(self.judge_options)
            options.setdefault("label_options", list(getattr(pl_module.hparams, "class_names", []) or []) or None)
            self.judge = Judge(**options)
            if options.get("device") is None:
                self.judge.to(pl_module.device)
        grades = self.judge.score([r["text"] for r in records], [r["row"] for r in records])
        for record, scores in zip(records, grades):
            record["judge"] = judge_record(scores)

    def _warn_unmeasured(self, name: str, counts: Mapping[str, float], datamodule) -> None:
        if not self.faithfulness or counts["measured"] == counts["answers"]:
            return
        spec = getattr(datamodule, "test_specs", {}).get(name)
        where = spec.path if spec is not None else "<prepared corpus>"
        if counts["measured"] == 0:
            log.warning("test set %s has no prosody bins: prosody faithfulness not scored; run "
                        "`emorl data prosody %s` first", name, where)
        else:
            log.warning("test set %s: %d of %d clips have no prosody bins and are left out of the faithfulness "
                        "(run `emorl data prosody %s`)", name, int(counts["answers"] - counts["measured"]),
                        int(counts["answers"]), where)

    def _write(self, trainer: L.Trainer, name: str, records: list[dict]) -> None:
        log_dir = trainer.log_dir if trainer.logger is not None else None
        if not log_dir or not records:
            return
        suffix = f".rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        path = Path(log_dir) / "explanations" / f"{_file_name(name)}{suffix}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                line = {k: v for k, v in record.items() if k != "row"}
                bins = prosody_bins(record["row"])
                line["bins"] = {k: bins[k] for k in ("pitch", "energy", "rate") if k in bins} if bins else None
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")

    def results_table(self) -> str | None:
        """The last test's scores as a table (``None`` before a test), printed by ``emorl test``."""
        return format_explanation_table(self.results) if self.results else None


def _class(names: Sequence[str], index: int | None) -> str | None:
    if index is None or int(index) < 0 or int(index) >= len(names):
        return None
    return names[int(index)]

"""What every corpus preparer shares: finding folders, probing clips, counting skips, folds, summary.

A preparer reads its corpus's native layout into :class:`Utterance` records, then
:func:`probe_utterances` turns them into manifest rows (skipping missing and unreadable clips
with a warning each, counted in a :class:`SkipLog`) and :func:`finish` writes the prepared corpus
(:func:`emorl.data.manifest.write_prepared_corpus`) with a summary in ``corpus.json``.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

from emorl.audio import AudioError, AudioInfo, MissingAudioError, probe_audio
from emorl.data.manifest import SPLITS, PreparedCorpus, write_prepared_corpus
from emorl.labels import LabelSet, UnknownLabelError

log = logging.getLogger("emorl.data.corpora")

#: How many skipped clips the summary names (all of them are counted).
MAX_NAMED = 20

Folds = dict[int, dict[str, list[str]]]


@dataclass
class Utterance:
    """One utterance found in a corpus's native layout, before its clip is probed."""

    key: str
    path: Path
    emo: str  # the raw label, as EmoBox has it
    label: str  # the canonical label
    group: Hashable = None  # what places it in a fold: a session, actor fold, speaker or split
    speaker: str | None = None
    gender: str | None = None
    transcript: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class SkipLog:
    """Clips left out of a corpus, by reason; every one is logged as a warning when recorded."""

    def __init__(self, corpus: str) -> None:
        self.corpus = corpus
        self.skipped: dict[str, list[str]] = {"missing": [], "unreadable": []}
        self.not_selected: Counter[str] = Counter()  # utterances outside the protocol (no warning)

    def missing(self, what: str, where: Path | str) -> None:
        log.warning("%s: clip of %s is missing (looked for %s); skipped", self.corpus, what, where)
        self.skipped["missing"].append(what)

    def unreadable(self, what: str, err: Exception | str) -> None:
        log.warning("%s: clip of %s cannot be read (%s); skipped", self.corpus, what, err)
        self.skipped["unreadable"].append(what)

    def other(self, reason: str, what: str, detail: str) -> None:
        log.warning("%s: %s: %s; skipped", self.corpus, what, detail)
        self.skipped.setdefault(reason, []).append(what)

    @property
    def total(self) -> int:
        return sum(len(names) for names in self.skipped.values())


def find_dir(candidates: Sequence[Path], what: str, hint: str = "") -> Path:
    """The first existing folder of ``candidates``; a clear error listing them all otherwise."""
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    looked = "\n  ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"cannot find {what}; looked in:\n  {looked}" + (f"\n{hint}" if hint else ""))


def find_file(candidates: Sequence[Path], what: str, hint: str = "") -> Path:
    """The first existing file of ``candidates``; a clear error listing them all otherwise."""
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = "\n  ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"cannot find {what}; looked for:\n  {looked}" + (f"\n{hint}" if hint else ""))


def raw_label(label_set: LabelSet, raw: str, where: str) -> str:
    """Canonical label of a raw label; :class:`UnknownLabelError` names ``where`` and the label."""
    try:
        return label_set.from_raw(raw)
    except UnknownLabelError as err:
        raise UnknownLabelError(f"{where}: {err}") from None


def mono_channel(info: AudioInfo) -> int | None:
    """The ``channel`` field of a corpus that names none: ``None``, every channel averaged.

    (EmoBox writes 1 on every row but MELD's 6-channel clips; emorl used to, which took the left
    channel of a stereo clip. Only a corpus that says where its speech is names a channel.)
    """
    return None


def probe_utterances(
    corpus: str,
    utterances: Sequence[Utterance],
    skips: SkipLog,
    channel_of: Callable[[AudioInfo], int | None] = mono_channel,
    workers: int = 1,
) -> list[dict]:
    """Manifest rows of the utterances whose clips exist and can be probed, in input order.

    Length, sample rate and frame count come from :func:`emorl.audio.probe_audio`; a clip that is
    missing, unreadable or holds no samples is skipped and recorded in ``skips``. ``workers > 1``
    probes in threads (worth it for MELD's mp4 clips, which must be decoded to be measured).
    """

    def probe(utt: Utterance) -> AudioInfo | Exception:
        try:
            return probe_audio(utt.path)
        except AudioError as err:
            return err

    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            infos = list(pool.map(probe, utterances))
    else:
        infos = [probe(utt) for utt in utterances]

    rows = []
    for utt, info in zip(utterances, infos):
        if isinstance(info, MissingAudioError):
            skips.missing(utt.key, utt.path)
            continue
        if isinstance(info, Exception):
            skips.unreadable(utt.key, info)
            continue
        if info.num_frames <= 0 or info.sample_rate <= 0:
            skips.unreadable(utt.key, f"{utt.path} holds no audio samples")
            continue
        row = {
            "key": utt.key,
            "dataset": corpus,
            "wav": str(utt.path.absolute()),
            "type": "raw",
            "sample_rate": info.sample_rate,
            "num_frame": info.num_frames,
            "task": "category",
            "length": info.duration,
            "emo": utt.emo,
            "channel": channel_of(info),
            "label": utt.label,
        }
        for name in ("speaker", "gender", "transcript"):
            value = getattr(utt, name)
            if value is not None:
                row[name] = value
        row.update(utt.extra)
        rows.append(row)
    return rows


def leave_one_group_out(
    rows: Iterable[Mapping[str, Any]], group_of: Mapping[str, Hashable], groups: Sequence[Hashable]
) -> Folds:
    """Fold ``k`` (1-based) tests ``groups[k-1]`` and trains on every other utterance (no valid split,
    as in EmoBox). ``group_of`` maps a key to its group. A fold whose group has no utterance is still
    written, with an empty test file (and a warning from :func:`finish`)."""
    keys = [row["key"] for row in rows]
    folds: Folds = {}
    for k, group in enumerate(groups, start=1):
        test = [key for key in keys if group_of[key] == group]
        train = [key for key in keys if group_of[key] != group]
        folds[k] = {"train": train, "test": test}
    return folds


def make_summary(rows: Sequence[Mapping[str, Any]], label_set: LabelSet, folds: Folds,
                 skips: SkipLog) -> dict[str, Any]:
    """Counts per label and per split of each fold, and the skipped clips (the first few named)."""
    labels = Counter(row["label"] for row in rows)
    return {
        "utterances": len(rows),
        "hours": round(sum(float(row.get("length", 0.0)) for row in rows) / 3600, 3),
        "labels": {label: labels.get(label, 0) for label in label_set.classes},
        "splits": {
            f"fold_{k}": {split: len(splits[split]) for split in SPLITS if split in splits}
            for k, splits in sorted(folds.items())
        },
        "skipped": {reason: len(names) for reason, names in skips.skipped.items()},
        "skipped_clips": {reason: names[:MAX_NAMED] for reason, names in skips.skipped.items() if names},
        "not_selected": dict(sorted(skips.not_selected.items())),
    }


def format_summary(summary: Mapping[str, Any], name: str = "") -> str:
    """A few readable lines from a summary (``PreparedCorpus.extra["summary"]``)."""
    lines = [f"{name or 'corpus'}: {summary['utterances']} utterances, {summary.get('hours', 0)} h"]
    if summary.get("full_size") not in (None, summary["utterances"]):
        lines[0] += f" (the complete corpus gives {summary['full_size']})"
    lines.append("  labels: " + ", ".join(f"{label} {n}" for label, n in summary["labels"].items()))
    for fold, splits in summary["splits"].items():
        lines.append(f"  {fold}: " + ", ".join(f"{split} {n}" for split, n in splits.items()))
    skipped = summary.get("skipped", {})
    total = sum(skipped.values())
    if total:
        parts = []
        for reason, count in skipped.items():
            if count:
                named = summary.get("skipped_clips", {}).get(reason, [])
                more = f" ... (+{count - len(named)})" if count > len(named) else ""
                parts.append(f"{reason} {count}: {' '.join(named)}{more}")
        lines.append(f"  skipped {total}: " + "; ".join(parts))
    else:
        lines.append("  skipped: none")
    if summary.get("not_selected"):
        lines.append(
            "  not selected (outside the protocol): "
            + ", ".join(f"{what} {n}" for what, n in summary["not_selected"].items())
        )
    return "\n".join(lines)


def finish(
    out: Path,
    name: str,
    rows: Sequence[Mapping[str, Any]],
    label_set: LabelSet,
    folds: Folds,
    skips: SkipLog,
    extra: Mapping[str, Any] | None = None,
    full_size: int | None = None,
) -> PreparedCorpus:
    """Write the prepared corpus with its summary (``corpus.json``), log the summary, return it.

    ``full_size``: how many utterances the complete corpus gives; the summary says when fewer
    were found (a partial download), which no label file would otherwise reveal.
    """
    if not rows:
        raise ValueError(
            f"{name}: no usable utterance found ({skips.total} skipped); nothing written to {out}"
        )
    for k, splits in sorted(folds.items()):
        if not splits.get("test"):
            log.warning("%s: fold %d has an empty test set (none of its speakers/sessions is present)",
                        name, k)
    summary = make_summary(rows, label_set, folds, skips)
    if full_size is not None:
        summary["full_size"] = full_size
    prepared = write_prepared_corpus(Path(out), name, rows, label_set, folds,
                                     extra={"summary": summary, **(extra or {})})
    log.info("%s", format_summary(summary, name))
    return prepared

"""``emorl data check``: find the clips of a prepared corpus that would break or skew training.

Every clip is decoded exactly as training decodes it — what :func:`emorl.audio.load_audio`
does with the row's ``channel``: decode, pick the channel (1-based) or average, resample to
16 kHz — and inspected with :func:`emorl.audio.clip_problems`. Problems, by name:

- ``missing`` — the file does not exist; ``empty`` — 0 bytes or no samples;
- ``unreadable`` — not decodable audio (corrupt, not audio);
- ``too-short`` — fewer samples than :data:`emorl.audio.MIN_CLIP_SECONDS` (a 60-byte wav, a
  1-sample clip): loading refuses it, so training skips it;
- ``nan`` — NaN or infinite samples; ``silent`` — peak below -60 dBFS (digital silence too);
- ``silent-channel`` — the row's ``channel`` picks a silent channel while another channel has
  sound (an old manifest's ``channel: 1`` on a stereo clip): drop the field to average them;
- ``unknown-label`` — the row's ``label`` is not a class of the corpus's label set;
- ``truncated`` — a wav whose header declares more frames than the file holds (a download or
  copy cut short): a warning, training uses the part that is there;
- ``clipping`` — more than :data:`CLIPPING_SHARE` of the samples at or beyond full scale (a
  float wav scaled by 1e6): a warning, loading clips them to [-1, 1];
- ``too-long`` — longer than ``--max-seconds``: a warning only, since the DataModule's
  duration policy skips or truncates such clips by design;
- ``rate-mismatch`` — the file's sample rate differs from the row's ``sample_rate`` (the clip
  was replaced after preparation): a warning, since decoding resamples from the file's real
  rate, but the manifest's ``length`` may be stale — prepare the corpus again.

A corpus whose manifest holds no row fails (``no-clips``). Any problem but the warnings makes the
report fail (exit code 1); with ``--strict`` (``strict=True``) every problem does. The report
ends with a summary line, one ``category count`` pair per problem found.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emorl.audio import (
    MIN_CLIP_SECONDS,
    TARGET_SAMPLE_RATE,
    AudioError,
    EmptyAudioError,
    MissingAudioError,
    clip_problems,
    clip_to_full_scale,
    decode_audio,
    full_scale_share,
    resample,
    silent_selected_channel,
    to_mono,
    wav_declared_frames,
)
from emorl.data.manifest import SPLITS, fold_path, load_prepared_corpus, read_manifest

PROBLEMS = ("no-clips", "missing", "empty", "unreadable", "too-short", "nan", "silent", "silent-channel",
            "unknown-label", "truncated", "clipping", "too-long", "rate-mismatch")
WARNINGS_ONLY = {"truncated", "clipping", "too-long", "rate-mismatch"}
CLIPPING_SHARE = 0.01  #: more than 1 % of the samples at full scale is reported as clipping
EXAMPLES = 10


@dataclass
class CheckReport:
    """What ``emorl data check`` found in a prepared corpus.

    ``problems`` maps every name of :data:`PROBLEMS` to the keys of the rows that have it, in
    manifest order (a clip may have several, e.g. ``silent`` and ``too-long``); ``paths`` maps
    every key to its resolved audio path; ``label_counts[fold][split]`` counts the canonical
    labels of each fold file present.
    """

    root: Path
    num_clips: int = 0
    problems: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in PROBLEMS})
    paths: dict[str, str] = field(default_factory=dict)
    label_counts: dict[int, dict[str, Counter]] = field(default_factory=dict)
    strict: bool = False

    @property
    def ok(self) -> bool:
        """False when any problem is found that is not a warning (:data:`WARNINGS_ONLY`); with
        ``strict``, when any problem is found."""
        return not any(keys for name, keys in self.problems.items() if self.strict or name not in WARNINGS_ONLY)

    def counts(self) -> dict[str, int]:
        """``{category: number of clips}`` for every problem found, in :data:`PROBLEMS` order."""
        return {name: len(keys) for name, keys in self.problems.items() if keys}

    def summary(self) -> str:
        """One line: ``summary: silent 1, truncated 2`` (or ``summary: no problems``)."""
        counts = self.counts()
        return "summary: " + (", ".join(f"{name} {n}" for name, n in counts.items()) or "no problems")

    def format(self) -> str:
        lines = [f"{self.root}: {self.num_clips} clips checked"]
        for name in PROBLEMS:
            keys = self.problems[name]
            if not keys:
                continue
            tag = "warning" if name in WARNINGS_ONLY and not self.strict else "ERROR"
            if name == "no-clips":
                lines.append(f"  {tag} no-clips: {self.paths.get(keys[0], keys[0])} holds no clip; prepare the corpus again")
                continue
            lines.append(f"  {tag} {name}: {len(keys)} clip(s)")
            lines += [f"    {key}  {self.paths.get(key, '')}" for key in keys[:EXAMPLES]]
            if len(keys) > EXAMPLES:
                lines.append(f"    ... and {len(keys) - EXAMPLES} more")
        labels = sorted({label for splits in self.label_counts.values() for c in splits.values() for label in c})
        if labels:
            lines.append("  label counts per fold and split:")
            lines.append("    " + "fold/split".ljust(14) + "".join(label[:9].rjust(10) for label in labels))
            for fold, splits in sorted(self.label_counts.items()):
                for split, counts in splits.items():
                    cells = "".join(str(counts.get(label, 0)).rjust(10) for label in labels)
                    lines.append("    " + f"{fold}/{split}".ljust(14) + cells)
        lines.append("  " + self.summary())
        lines.append("  result: " + ("ok" if self.ok else "BROKEN — fix or remove the clips above"))
        return "\n".join(lines)


def _decoded_problems(waveform: np.ndarray, sample_rate: int, path: Path, channel: int | None) -> list[str]:
    """What the raw decoded channels show before load_audio's fixes: short, cut, clipped, muted channel."""
    found = []
    if waveform.shape[1] < MIN_CLIP_SECONDS * sample_rate:
        found.append("too-short")
    declared = wav_declared_frames(path)
    if declared is not None and declared > waveform.shape[1]:
        found.append("truncated")
    if silent_selected_channel(waveform, channel):
        found.append("silent-channel")
    if full_scale_share(to_mono(waveform, channel)) > CLIPPING_SHARE:
        found.append("clipping")
    return found


def _clip_problems(row: dict, path: Path, max_seconds: float | None) -> list[str]:
    """load_audio's steps, keeping the file's own sample rate for the rate-mismatch check."""
    try:
        waveform, sample_rate = decode_audio(path)
        mono = clip_to_full_scale(resample(to_mono(waveform, row.get("channel")), sample_rate, TARGET_SAMPLE_RATE))
    except MissingAudioError:
        return ["missing"]
    except EmptyAudioError:
        return ["empty"]
    except AudioError:  # corrupt, not audio, or an invalid sample rate
        return ["unreadable"]
    found = _decoded_problems(waveform, sample_rate, path, row.get("channel"))
    found += clip_problems(mono, TARGET_SAMPLE_RATE, max_seconds)
    expected = row.get("sample_rate")
    if expected and int(expected) != sample_rate:
        found.append("rate-mismatch")
    return found


def check_max_seconds(max_seconds: float | None) -> None:
    """Raise ValueError unless ``max_seconds`` is None or a positive number of seconds."""
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ValueError(f"--max-seconds must be a positive number of seconds, not {max_seconds}")


def check_corpus(root: Path, max_seconds: float | None = 30.0, workers: int = 2, strict: bool = False) -> CheckReport:
    """Decode and inspect every clip of a prepared corpus (see the module docstring)."""
    check_max_seconds(max_seconds)
    corpus = load_prepared_corpus(root)
    rows = corpus.rows()
    report = CheckReport(Path(root), num_clips=len(rows), strict=strict)
    if not rows:
        report.problems["no-clips"].append(corpus.name)
        report.paths[corpus.name] = str(corpus.manifest_path)
    for row in rows:
        report.paths[row["key"]] = str(corpus.resolve_wav(row["wav"]))
        if row["label"] not in corpus.label_set:
            report.problems["unknown-label"].append(row["key"])

    def inspect(row):
        return row["key"], _clip_problems(row, corpus.resolve_wav(row["wav"]), max_seconds)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for key, found in pool.map(inspect, rows):
            for name in found:
                report.problems[name].append(key)
    for fold in corpus.folds:
        report.label_counts[fold] = {}
        for split in SPLITS:
            path = fold_path(corpus.root, corpus.name, fold, split)
            if path.exists():
                report.label_counts[fold][split] = Counter(r["label"] for r in read_manifest(path))
    return report


def main_check(root: Path, max_seconds: float | None = 30.0, strict: bool = False) -> int:
    """Print the report; exit code 0 when the corpus is usable, 1 when something is broken
    (with ``strict``, when anything at all is reported)."""
    report = check_corpus(root, max_seconds, strict=strict)
    print(report.format())
    return 0 if report.ok else 1

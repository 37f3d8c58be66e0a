"""``emorl data check``: find the clips of a prepared corpus that would break or skew training.

Every clip is decoded exactly as training decodes it — what :func:`emorl.audio.load_audio`
does with the row's ``channel``: decode, pick the channel (1-based) or average, resample to
16 kHz — and inspected with :func:`emorl.audio.clip_problems`. Problems, by name:

- ``missing`` — the file does not exist; ``empty`` — 0 bytes or no samples;
- ``unreadable`` — not decodable audio (corrupt, truncated, not audio);
- ``nan`` — NaN or infinite samples; ``silent`` — peak below -60 dBFS;
- ``unknown-label`` — the row's ``label`` is not a class of the corpus's label set;
- ``too-long`` — longer than ``--max-seconds``: a warning only, since the DataModule's
  duration policy skips or truncates such clips by design;
- ``rate-mismatch`` — the file's sample rate differs from the row's ``sample_rate`` (the clip
  was replaced after preparation): a warning, since decoding resamples from the file's real
  rate, but the manifest's ``length`` may be stale — prepare the corpus again.

Any problem but ``too-long`` and ``rate-mismatch`` makes the report fail (exit code 1).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from emorl.audio import (
    TARGET_SAMPLE_RATE,
    AudioError,
    EmptyAudioError,
    MissingAudioError,
    clip_problems,
    decode_audio,
    resample,
    to_mono,
)
from emorl.data.manifest import SPLITS, fold_path, load_prepared_corpus, read_manifest

PROBLEMS = ("missing", "empty", "unreadable", "nan", "silent", "unknown-label", "too-long", "rate-mismatch")
WARNINGS_ONLY = {"too-long", "rate-mismatch"}
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

    @property
    def ok(self) -> bool:
        """False when any clip has a problem other than the warnings ``too-long``/``rate-mismatch``."""
        return not any(keys for name, keys in self.problems.items() if name not in WARNINGS_ONLY)

    def format(self) -> str:
        lines = [f"{self.root}: {self.num_clips} clips checked"]
        for name in PROBLEMS:
            keys = self.problems[name]
            if not keys:
                continue
            tag = "warning" if name in WARNINGS_ONLY else "ERROR"
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
        lines.append("  result: " + ("ok" if self.ok else "BROKEN — fix or remove the clips above"))
        return "\n".join(lines)


def _clip_problems(row: dict, path: Path, max_seconds: float | None) -> list[str]:
    """load_audio's steps, keeping the file's own sample rate for the rate-mismatch check."""
    try:
        waveform, sample_rate = decode_audio(path)
        mono = resample(to_mono(waveform, row.get("channel")), sample_rate, TARGET_SAMPLE_RATE)
    except MissingAudioError:
        return ["missing"]
    except EmptyAudioError:
        return ["empty"]
    except AudioError:  # corrupt, truncated, not audio, or an invalid sample rate
        return ["unreadable"]
    found = clip_problems(mono, TARGET_SAMPLE_RATE, max_seconds)
    expected = row.get("sample_rate")
    if expected and int(expected) != sample_rate:
        found.append("rate-mismatch")
    return found


def check_corpus(root: Path, max_seconds: float | None = 30.0, workers: int = 2) -> CheckReport:
    """Decode and inspect every clip of a prepared corpus (see the module docstring)."""
    corpus = load_prepared_corpus(root)
    rows = corpus.rows()
    report = CheckReport(Path(root), num_clips=len(rows))
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


def main_check(root: Path, max_seconds: float | None = 30.0) -> int:
    """Print the report; exit code 0 when the corpus is usable, 1 when something is broken."""
    report = check_corpus(root, max_seconds)
    print(report.format())
    return 0 if report.ok else 1

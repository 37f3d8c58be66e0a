"""``emorl data prosody OUT_DIR``: measure, bin and caption every utterance of a prepared corpus.

Every clip is decoded as training decodes it (:func:`emorl.audio.load_audio` with the row's
``channel``, 16 kHz) and measured by :func:`emorl.prosody.measure_prosody` with the row's
``transcript``; the corpus's tertile thresholds are fitted over all measured clips (pitch per
``gender``), and every row gets a ``"prosody"`` field::

    {"measures": {...ProsodyMeasures...}, "bins": {"pitch": "high", ...}, "caption": "pitch: ...",
     "pitch_re_speaker_st": 2.1, "version": 1}

written into ``<corpus>.jsonl`` and every fold file (:func:`emorl.data.manifest.update_rows`);
the thresholds, the parameters and a summary go into ``corpus.json`` under ``"prosody"``.
``pitch_re_speaker_st`` is the clip's mean pitch in semitones re the median of its speaker's
clips (absent without a speaker, or with fewer than two voiced clips of that speaker).

A clip that is missing, empty or not decodable is counted and named in the report and gets no
``"prosody"`` field; a silent or unvoiced clip is measured with fallbacks (``None`` measures,
``unknown`` bins) and counted. Running again reuses the stored measures (``--overwrite``
measures again) and refits the thresholds, so a second run rewrites identical files.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from emorl import prosody as P
from emorl.data.manifest import load_prepared_corpus, update_corpus_meta, update_rows

log = logging.getLogger(__name__)
FAILURES = ("missing", "empty", "unreadable", "error")
EXAMPLES = 10


@dataclass
class ProsodyReport:
    """What ``emorl data prosody`` did: per-clip failures and fallbacks, by key, in manifest order."""

    root: Path
    num_clips: int = 0
    measured: int = 0  #: measured in this run
    reused: int = 0  #: stored measures kept (no ``--overwrite``)
    measured_after_crash: int = 0  #: measured in the main process after a worker process died
    failed: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in FAILURES})
    fallbacks: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in P.FALLBACKS})
    rate_sources: Counter = field(default_factory=Counter)
    paths: dict[str, str] = field(default_factory=dict)
    thresholds: P.ProsodyThresholds | None = None
    seconds: float = 0.0

    @property
    def num_failed(self) -> int:
        return sum(len(keys) for keys in self.failed.values())

    def summary(self) -> dict[str, Any]:
        """The deterministic part, stored in ``corpus.json`` (no timings, no run counts)."""
        return {
            "clips": self.num_clips,
            "annotated": self.num_clips - self.num_failed,
            "failed": {name: len(keys) for name, keys in self.failed.items() if keys},
            "fallbacks": {name: len(keys) for name, keys in self.fallbacks.items() if keys},
            "rate_source": dict(sorted(self.rate_sources.items())),
        }

    def format(self) -> str:
        head = (f"{self.root}: prosody of {self.num_clips} clips ({self.measured} measured, "
                f"{self.reused} reused, {self.num_failed} failed) in {self.seconds:.1f} s")
        lines = [head]
        if self.measured_after_crash:
            lines.append(f"  a worker process died: {self.measured_after_crash} clip(s) measured in the main process")
        for title, table in (("could not read", self.failed), ("fallback", self.fallbacks)):
            for name, keys in table.items():
                if not keys:
                    continue
                why = P.FALLBACKS.get(name, "")
                lines.append(f"  {title} {name}: {len(keys)} clip(s)" + (f" — {why}" if why else ""))
                lines += [f"    {key}  {self.paths.get(key, '')}" for key in keys[:EXAMPLES]]
                if len(keys) > EXAMPLES:
                    lines.append(f"    ... and {len(keys) - EXAMPLES} more")
        if self.rate_sources:
            lines.append("  speaking rate from: " + ", ".join(f"{k} {v}" for k, v in sorted(self.rate_sources.items())))
        if self.thresholds is not None:
            for name in ("pitch", "energy", "rate"):
                for group, (low, high) in sorted((self.thresholds.cuts.get(name) or {}).items()):
                    unit = P.BINNED[name].rsplit("_", 1)[-1] if name != "rate" else "syl/s"
                    lines.append(f"  {name} [{group}]: low < {low:.2f} <= normal <= {high:.2f} < high ({unit})")
        return "\n".join(lines)


def _measure_clip(job: tuple[str, int | None, str | None]) -> tuple[str, Any]:
    """(``"ok"``, measures dict) or (failure name, message); runs in a worker process."""
    from emorl.audio import AudioError, EmptyAudioError, MissingAudioError, load_audio

    path, channel, transcript = job
    try:
        waveform = load_audio(path, channel=channel)
    except MissingAudioError as err:
        return "missing", str(err)
    except EmptyAudioError as err:
        return "empty", str(err)
    except AudioError as err:
        return "unreadable", str(err)
    try:
        return "ok", P.measure_prosody(waveform, P.SAMPLE_RATE, transcript).to_dict()
    except Exception as err:  # noqa: BLE001 - a failure on one clip must not stop the corpus
        return "error", f"{type(err).__name__}: {err}"


def _measure_in_workers(jobs: list, workers: int, report: ProsodyReport) -> Iterator[tuple[str, Any]]:
    """:func:`_measure_clip` over ``jobs`` in ``workers`` processes, in order.

    A worker that dies (a crash in a native library, the out-of-memory killer) breaks the whole
    pool: the results already returned are kept, and the clips after them are measured in this
    process instead, counted in ``report.measured_after_crash`` and logged.
    """
    done = 0
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for result in pool.map(_measure_clip, jobs, chunksize=4):
                done += 1
                yield result
    except BrokenProcessPool as err:
        report.measured_after_crash = len(jobs) - done
        log.warning("a prosody worker process died (%s) after %d of %d clips: measuring the other %d in this "
                    "process", err, done, len(jobs), len(jobs) - done)
        yield from map(_measure_clip, jobs[done:])


def _parameters() -> dict[str, Any]:
    return {"sample_rate": P.SAMPLE_RATE, "hop_s": P.HOP / P.SAMPLE_RATE, "pyin_fmin": P.FMIN, "pyin_fmax": P.FMAX,
            "active_below_peak_db": P.ACTIVE_BELOW_PEAK_DB, "active_floor_db": P.ACTIVE_FLOOR_DB,
            "min_pause_s": P.MIN_PAUSE_S, "praat_floor": P.PRAAT_FLOOR, "praat_ceiling": P.PRAAT_CEILING,
            "min_group": P.MIN_GROUP}


def annotate_corpus(root: str | Path, workers: int = 1, overwrite: bool = False) -> ProsodyReport:
    """Measure (or reuse), bin and caption every clip; write the manifests and ``corpus.json``."""
    start = time.perf_counter()
    corpus = load_prepared_corpus(root)
    rows = corpus.rows()
    report = ProsodyReport(Path(root), num_clips=len(rows))
    measures: dict[str, P.ProsodyMeasures] = {}
    todo = []
    for row in rows:
        report.paths[row["key"]] = str(corpus.resolve_wav(row["wav"]))
        stored = row.get("prosody")
        if (not overwrite and isinstance(stored, dict) and stored.get("version") == P.PROSODY_VERSION
                and isinstance(stored.get("measures"), dict)):
            measures[row["key"]] = P.ProsodyMeasures.from_dict(stored["measures"])
            report.reused += 1
        else:
            todo.append(row)
    jobs = [(report.paths[r["key"]], r.get("channel"), r.get("transcript")) for r in todo]
    if jobs:
        log.info("%s: measuring the prosody of %d clips (%d reused), %d worker(s)",
                 corpus.root, len(jobs), report.reused, workers)
    every = max(100, len(jobs) // 10)

    def progress(results):
        for done, result in enumerate(results, start=1):
            if done % every == 0 and done < len(jobs):
                log.info("%d / %d clips measured (%.0f s)", done, len(jobs), time.perf_counter() - start)
            yield result

    if workers > 1 and len(jobs) > 1:
        results = list(progress(_measure_in_workers(jobs, workers, report)))
    else:
        results = list(progress(map(_measure_clip, jobs)))
    for row, (status, value) in zip(todo, results):
        if status == "ok":
            measures[row["key"]] = P.ProsodyMeasures.from_dict(value)
            report.measured += 1
        else:
            report.failed[status].append(row["key"])
            log.warning("%s: no prosody (%s): %s", row["key"], status, value)

    by_key = {row["key"]: row for row in rows}
    ordered = [key for key in by_key if key in measures]
    thresholds = P.fit_thresholds((measures[k], by_key[k].get("gender")) for k in ordered)
    medians = P.speaker_medians([(by_key[k].get("speaker"), measures[k]) for k in ordered])
    updates: dict[str, dict[str, Any]] = {}
    for key, row in by_key.items():
        if key not in measures:
            updates[key] = {"prosody": None}
            continue
        m = measures[key]
        for name in m.fallbacks:
            report.fallbacks.setdefault(name, []).append(key)
        if m.rate_source:
            report.rate_sources[m.rate_source] += 1
        entry = P.annotate(m, thresholds, row.get("gender"))
        speaker = row.get("speaker")
        relative = P.semitones_re(m.pitch_mean_hz, medians.get(str(speaker))) if speaker is not None else None
        if relative is not None:
            entry["pitch_re_speaker_st"] = round(relative, 4)
        updates[key] = {"prosody": entry}
    for name, keys in report.fallbacks.items():
        if keys:
            log.info("%d clip(s) with fallback %r (%s), e.g. %s", len(keys), name, P.FALLBACKS[name], keys[0])
    report.thresholds = thresholds
    update_rows(corpus, updates)
    update_corpus_meta(corpus.root, {"prosody": {"version": P.PROSODY_VERSION, "parameters": _parameters(),
                                                 "thresholds": thresholds.to_dict(), "summary": report.summary()}})
    report.seconds = time.perf_counter() - start
    return report


def load_thresholds(root: str | Path) -> P.ProsodyThresholds | None:
    """The thresholds ``emorl data prosody`` stored for a prepared corpus, to bin new clips alike."""
    stored = load_prepared_corpus(root).prosody
    return P.ProsodyThresholds.from_dict(stored["thresholds"]) if stored else None


def main_prosody(root: Path, workers: int = 1, overwrite: bool = False) -> int:
    """Print the report; exit code 0, or 1 when no clip of a non-empty corpus could be measured."""
    report = annotate_corpus(root, workers=workers, overwrite=overwrite)
    print(report.format())
    return 1 if report.num_clips and report.num_failed == report.num_clips else 0

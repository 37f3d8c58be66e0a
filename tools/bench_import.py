"""`emorl data import-hf` against the native RAVDESS preparer on the same clips: rows/s and peak memory.

    python tools/bench_import.py                   # 2,000 clips, under a minute on 2 CPU cores
    python tools/bench_import.py --rows 20000      # the figure in docs/data.md (about 6 min)
    python tools/bench_import.py --rows 20000 --keep /tmp/bench20k   # keep the clips; a rerun reuses them

Everything is made in a temporary folder (``--keep DIR`` keeps it there): ``--rows`` synthetic
clips (tones, 0.5-1.0 s, 16 kHz mono wav) in RAVDESS's native layout
(``Actor_XX/03-01-EE-II-SS-RR-AA.wav``, 24 actors, 8 emotions, plus ``transcripts.tsv``), and the
same clips as two Hugging Face datasets written with ``save_to_disk``: one whose ``audio`` column
holds the paths, one whose ``Audio`` column embeds the bytes. Then, each in a fresh process (so
each peak resident set size is its own):

- ``native``: ``emorl.data.corpora.prepare_ravdess`` (probe every clip, EmoBox's 6 folds);
- ``hf paths``: ``import_hf`` of the paths dataset (RAVDESS label map, speaker folds);
- ``hf bytes``: ``import_hf`` of the bytes dataset (every clip written once under OUT/audio).

Every arm probes every clip with the same ``--workers`` and writes a prepared corpus; the bench
checks that the three corpora have the same keys, labels and speakers. It prints rows per second,
the peak RSS during the work (the kernel's peak count, VmHWM, is restarted after the imports), that
peak above the RSS after the imports (what the work itself added), and the peak of the anonymous
part (sampled every 20 ms) above its level after the imports: RSS also counts the page cache of
the files a process reads or memory-maps (``load_from_disk`` memory-maps the Arrow file, so
reading a 600 MB dataset of embedded audio maps 600 MB), which the kernel reclaims at will; the
anonymous part (heap, Python objects) is what would grow if rows were held in memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the children import this checkout's emorl
EMOTIONS = ("Neutral", "Calm", "Happy", "Sad", "Angry", "Fearful", "Disgust", "Surprised")
ARMS = ("native", "hf paths", "hf bytes")


def clip_name(i: int) -> tuple[str, str, str]:
    """Actor, RAVDESS file stem and emotion of the i-th synthetic clip (unique up to 24*8*2*99*99)."""
    actor, emotion, intensity, rest = i % 24 + 1, (i // 24) % 8 + 1, (i // 192) % 2 + 1, i // 384
    statement, repetition = rest % 99 + 1, rest // 99 + 1
    stem = f"03-01-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"
    return f"{actor:02d}", stem, EMOTIONS[emotion - 1]


def make_clips(raw: Path, rows: int) -> None:
    """The RAVDESS-layout clips and ``transcripts.tsv``."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    for i in range(rows):
        actor, stem, _ = clip_name(i)
        seconds = 0.5 + 0.5 * rng.random()
        t = np.arange(int(seconds * 16000)) / 16000
        path = raw / f"Actor_{actor}" / f"{stem}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, (0.3 * np.sin(2 * np.pi * (100 + 40 * (i % 8)) * t)).astype("float32"), 16000)
    (raw / "transcripts.tsv").write_text("".join(f"{s:02d}\tsentence {s}\n" for s in range(1, 100)))


def _rows(raw: str, count: int, embed: bool):
    for i in range(count):
        actor, stem, emotion = clip_name(i)
        path = f"{raw}/Actor_{actor}/{stem}.wav"
        audio = {"bytes": Path(path).read_bytes(), "path": f"{stem}.wav"} if embed else path
        yield {"key": stem, "audio": audio, "emotion": emotion, "actor": actor, "text": f"sentence {stem[12:14]}"}


def make_datasets(raw: Path, rows: int, work: Path) -> None:
    """The paths and bytes datasets of the clips, built and saved in batches (flat memory)."""
    import datasets

    for embed, folder in ((False, "ds_paths"), (True, "ds_bytes")):
        audio = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")} if embed else datasets.Value("string")
        features = datasets.Features({"key": datasets.Value("string"), "audio": audio, "emotion": datasets.Value("string"),
                                      "actor": datasets.Value("string"), "text": datasets.Value("string")})
        ds = datasets.Dataset.from_generator(_rows, features=features, cache_dir=str(work / "cache"),
                                             writer_batch_size=256,
                                             gen_kwargs={"raw": str(raw), "count": rows, "embed": embed})
        if embed:
            ds = ds.cast_column("audio", datasets.Audio(decode=False))
        ds.save_to_disk(str(work / folder))
    shutil.rmtree(work / "cache", ignore_errors=True)


def status_mib(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS`` now, ``VmHWM`` the peak), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class AnonPeak(threading.Thread):
    """Samples the process's anonymous RSS (heap, Python objects; not the page cache of files it
    reads or memory-maps) every 20 ms and keeps the peak: the kernel keeps no peak of it."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.running = status_mib("RssAnon"), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, status_mib("RssAnon"))
            time.sleep(0.02)

    def stop(self) -> float:
        self.running = False
        self.join()
        return max(self.peak, status_mib("RssAnon"))


def reset_peak() -> bool:
    """Restart the kernel's peak-RSS count (VmHWM) here, so imports' transient peaks do not count."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def run_arm(arm: str, work: Path, workers: int) -> dict:
    """One arm, in this process (``--arm``): prepare or import, time it, measure memory."""
    import logging

    from emorl.data.corpora import prepare_ravdess
    from emorl.data.hf_import import import_hf

    logging.disable(logging.INFO)  # the summaries are not what is measured
    import datasets  # noqa: F401  (imported before the baseline, as import_hf would)

    out = work / f"out_{arm.replace(' ', '_')}"
    shutil.rmtree(out, ignore_errors=True)
    baseline, anon_baseline, reset = status_mib("VmRSS"), status_mib("RssAnon"), reset_peak()
    sampler = AnonPeak()
    sampler.start()
    start = time.perf_counter()
    if arm == "native":
        corpus = prepare_ravdess(work / "raw", out, workers=workers)
    else:
        source = work / ("ds_paths" if arm == "hf paths" else "ds_bytes")
        corpus = import_hf(str(source), out, name="ravdess", key_column="key", speaker_column="actor",
                           transcript_column="text", label_map="ravdess", folds=6, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    anon_peak = sampler.stop()
    peak = status_mib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = {r["key"]: [r["label"], r["speaker"]] for r in corpus.rows()}
    digest = hashlib.sha256(json.dumps(sorted(rows.items())).encode()).hexdigest()
    return {"arm": arm, "rows": len(rows), "seconds": seconds, "peak_mib": peak, "above_imports_mib": peak - baseline,
            "anon_above_imports_mib": anon_peak - anon_baseline, "digest": digest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="synthetic clips (docs/data.md: 20000)")
    parser.add_argument("--workers", type=int, default=1, help="threads probing clips, in every arm")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    parser.add_argument("--arm", choices=ARMS, help=argparse.SUPPRESS)  # internal: one arm in a child process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.arm:
        print(json.dumps(run_arm(args.arm, args.work, args.workers)))
        return 0
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_import."))
    try:
        marker = work / "rows.txt"  # --keep DIR: a second run on the same DIR reuses the clips
        if not (marker.is_file() and marker.read_text() == str(args.rows)):
            start = time.perf_counter()
            make_clips(work / "raw", args.rows)
            make_datasets(work / "raw", args.rows, work)
            marker.write_text(str(args.rows))
            print(f"{args.rows} clips and their two datasets made in {time.perf_counter() - start:.1f} s ({work})")
        results = []
        for arm in ARMS:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
            done = subprocess.run([sys.executable, __file__, "--arm", arm, "--work", str(work),
                                   "--workers", str(args.workers)], capture_output=True, text=True, env=env)
            if done.returncode:
                print(done.stderr, file=sys.stderr)
                return 1
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    native = results[0]
    print(f"\n{'arm':<10} {'rows':>7} {'seconds':>8} {'rows/s':>8} {'vs native':>9} {'peak RSS MiB':>13} "
          f"{'above imports':>14} {'anonymous above imports':>24}")
    for r in results:
        rate = r["rows"] / r["seconds"]
        print(f"{r['arm']:<10} {r['rows']:>7} {r['seconds']:>8.1f} {rate:>8.0f} "
              f"{rate / (native['rows'] / native['seconds']):>8.2f}x {r['peak_mib']:>13.0f} {r['above_imports_mib']:>14.0f} "
              f"{r['anon_above_imports_mib']:>24.0f}")
    print("(peak RSS counts the pages of files read or memory-mapped, e.g. a save_to_disk dataset's Arrow "
          "file; the anonymous part is the heap)")
    same = all(r["digest"] == native["digest"] for r in results)
    print("same keys, labels and speakers in every arm: " + ("yes" if same else "NO"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

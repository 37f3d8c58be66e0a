"""MELD (Multimodal EmotionLines Dataset, Friends TV series): 13708 labelled utterances, 7 classes.

Labels come from the official CSVs ``{train,dev,test}_sent_emo.csv`` (found at ``root``,
``root/train/``, ``root/data/MELD/``, ``root/MELD.Raw/`` ...); clips are
``dia{D}_utt{U}.mp4`` (or already-extracted ``.wav`` with the same stem) under
``train/train_splits/``, ``dev_splits_complete/`` and ``output_repeated_splits_test/``; test clips
may carry a ``final_videos_test`` prefix. ``wav_dir`` points at extracted audio instead, organised
by the same split folders (or ``train/``, ``dev/``, ``test/``).

Keys are EmoBox's ``meld-dia{D}_utt{U}-{train,dev,test}`` (dialogue ids repeat across splits).
One fold: official train / dev / test = train / valid / test. Clips with 6 channels get
``channel: 3`` (the centre channel, as EmoBox), others ``channel: null`` (channels averaged). The real release lacks
``dia125_utt3`` (train) and ``dia110_utt7`` (dev): they are skipped, leaving 9988 / 1108 / 2610.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from emorl.audio import AudioInfo
from emorl.data.corpora.common import (
    SkipLog,
    Utterance,
    find_dir,
    find_file,
    finish,
    log,
    probe_utterances,
    raw_label,
)
from emorl.data.manifest import PreparedCorpus
from emorl.labels import CORPUS_LABELS

NAME = "meld"
#: MELD split -> the prepared corpus's split of fold 1.
SPLIT_OF = {"train": "train", "dev": "valid", "test": "test"}
CLIP_DIRS = {
    "train": ("train/train_splits", "train_splits"),
    "dev": ("dev_splits_complete", "dev/dev_splits_complete", "dev_splits"),
    "test": ("output_repeated_splits_test", "test/output_repeated_splits_test", "test_splits"),
}
_BASES = ("", "MELD.Raw", "MELD", "data/MELD")
_CLIP = re.compile(r"^(?:final_videos_test)?dia(\d+)_utt(\d+)$")
_SUFFIXES = (".wav", ".flac", ".mp4")  # preference order when several exist


def meld_channel(info: AudioInfo) -> int | None:
    """EmoBox's rule: the centre channel (3, 1-based) of 6-channel clips; else None (averaged)."""
    return 3 if info.channels == 6 else None


def find_csv(root: Path, split: str) -> Path:
    """``<split>_sent_emo.csv`` at the root of the release, in ``<split>/`` or in ``data/MELD/``."""
    name = f"{split}_sent_emo.csv"
    candidates = [root / base / sub / name for base in _BASES for sub in ("", split)]
    return find_file(candidates, f"MELD's {name}", "pass --root the folder of the MELD release (MELD.Raw)")


def index_clips(folder: Path) -> dict[tuple[int, int], Path]:
    """(dialogue, utterance) -> clip in ``folder``.

    A .wav beats an .mp4 of the same clip, an unprefixed name a ``final_videos_test`` one."""
    best: dict[tuple[int, int], tuple[tuple[int, int], Path]] = {}
    for path in folder.iterdir():
        match = _CLIP.match(path.stem)
        if not match or path.suffix.lower() not in _SUFFIXES or not path.is_file():
            continue
        rank = (_SUFFIXES.index(path.suffix.lower()), path.stem.startswith("final_videos_test"))
        ids = (int(match.group(1)), int(match.group(2)))
        if ids not in best or rank < best[ids][0]:
            best[ids] = (rank, path)
    return {ids: path for ids, (_, path) in best.items()}


def read_split(
    csv_path: Path, split: str, clips: dict[tuple[int, int], Path], skips: SkipLog
) -> list[Utterance]:
    """The utterances of one split's CSV whose clip is in ``clips`` (the others are skipped)."""
    labels, found, seen = CORPUS_LABELS[NAME], [], set()
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = {"Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"}
        missing = columns - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{csv_path}: not a MELD label file (no column {sorted(missing)})")
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            try:
                ids = (int(row["Dialogue_ID"]), int(row["Utterance_ID"]))
            except (TypeError, ValueError):
                ids_text = f"{row['Dialogue_ID']!r}/{row['Utterance_ID']!r}"
                raise ValueError(f"{where}: bad Dialogue_ID/Utterance_ID {ids_text}") from None
            raw = (row["Emotion"] or "").strip()
            label = raw_label(labels, raw, f"{where} (dia{ids[0]}_utt{ids[1]})")
            key = f"{NAME}-dia{ids[0]}_utt{ids[1]}-{split}"
            if key in seen:
                log.warning("meld: %s lists dia%d_utt%d twice; the first is kept", csv_path, *ids)
                continue
            seen.add(key)
            if ids not in clips:
                skips.missing(key, f"dia{ids[0]}_utt{ids[1]}.mp4/.wav in the {split} clip folder")
                continue
            found.append(
                Utterance(key, clips[ids], raw, label, group=split, speaker=row["Speaker"].strip(),
                          transcript=row["Utterance"], extra={"dialogue": ids[0], "utterance": ids[1]})
            )  # fmt: skip
    return found


def prepare_meld(root: Path, out: Path, wav_dir: Path | None = None, workers: int = 1) -> PreparedCorpus:
    """Prepare MELD from ``root`` into ``out``; see the module docstring.

    ``wav_dir``: a folder of extracted audio (same stems) used instead of the release's clip folders.
    ``workers``: threads probing clips (mp4 clips are decoded to be measured).
    """
    root, skips = Path(root), SkipLog(NAME)
    clip_root = Path(wav_dir) if wav_dir is not None else root
    labels = CORPUS_LABELS[NAME]
    utterances: list[Utterance] = []
    for split in SPLIT_OF:
        csv_path = find_csv(root, split)
        if wav_dir is None:
            candidates = [root / base / sub for base in _BASES for sub in CLIP_DIRS[split]]
        else:  # extracted audio: the release's folder names, or just train/ dev/ test/
            candidates = [clip_root / sub for sub in (*CLIP_DIRS[split], split)]
        folder = find_dir(candidates, f"MELD's {split} clips")
        log.info("meld: %s labels from %s, clips from %s", split, csv_path, folder)
        utterances += read_split(csv_path, split, index_clips(folder), skips)
    rows = probe_utterances(NAME, utterances, skips, channel_of=meld_channel, workers=workers)
    split_of = {utt.key: SPLIT_OF[str(utt.group)] for utt in utterances}
    folds = {1: {s: [row["key"] for row in rows if split_of[row["key"]] == s] for s in SPLIT_OF.values()}}
    return finish(Path(out), NAME, rows, labels, folds, skips)

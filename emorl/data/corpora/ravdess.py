"""RAVDESS (Ryerson Audio-Visual Database of Emotional Speech and Song), speech part: 1440 clips.

Files ``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` anywhere below ``root`` (modality, vocal channel,
emotion, intensity, statement, repetition, actor). Only audio-only (MM = 03) speech (VV = 01)
files are taken; song files and video files are not selected. Actor AA is male when odd.
Keys are EmoBox's ``ravdess-<file stem>``; duplicated files (some re-uploads ship every actor
twice) are read once.

Folds are EmoBox's 6 folds of 4 actors each. EmoBox drew them with an unseeded shuffle, so they
cannot be re-drawn: :data:`ACTOR_FOLD` is read off EmoBox's committed fold files. Train = the
other 20 actors, no valid split. A corpus with fewer actors (the demo corpus) still gets all six
folds; a fold none of whose actors is present has an empty test file (a warning says so).

Transcripts: the two RAVDESS statements, or a sidecar ``transcripts.tsv`` at ``root``
(``statement<TAB>text`` lines; statement = the 2-digit SS field) when there is one.
"""

from __future__ import annotations

import re
from pathlib import Path

from emorl.data.corpora.common import (
    SkipLog,
    Utterance,
    finish,
    leave_one_group_out,
    log,
    probe_utterances,
    raw_label,
)
from emorl.data.manifest import PreparedCorpus
from emorl.labels import CORPUS_LABELS

NAME = "ravdess"
FULL_SIZE = 1440
#: Actor -> EmoBox fold (fold 1 tests actors 1, 11, 20, 21; ...), from EmoBox's fold files.
ACTOR_FOLD: dict[int, int] = {
    1: 1, 11: 1, 20: 1, 21: 1,
    4: 2, 10: 2, 12: 2, 14: 2,
    8: 3, 9: 3, 19: 3, 23: 3,
    3: 4, 5: 4, 7: 4, 24: 4,
    2: 5, 15: 5, 16: 5, 18: 5,
    6: 6, 13: 6, 17: 6, 22: 6,
}  # fmt: skip
NUM_FOLDS = 6
#: Emotion code -> EmoBox's raw label.
EMOTIONS = {
    "01": "Neutral", "02": "Calm", "03": "Happy", "04": "Sad",
    "05": "Angry", "06": "Fearful", "07": "Disgust", "08": "Surprised",
}  # fmt: skip
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def read_transcripts(path: Path) -> dict[str, str]:
    """``statement<TAB>text`` lines (a header line and blank lines are ignored) -> {"01": text}."""
    table: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        statement, sep, text = line.partition("\t")
        if not statement.strip().isdigit():
            if lineno == 1:
                continue  # a header
            raise ValueError(f"{path}:{lineno}: expected 'statement<TAB>text', got {line!r}")
        if not sep:
            raise ValueError(f"{path}:{lineno}: no tab between statement and text")
        table[f"{int(statement):02d}"] = text.strip()
    return table


def prepare_ravdess(
    root: Path, out: Path, transcripts: Path | None = None, workers: int = 1
) -> PreparedCorpus:
    """Prepare RAVDESS speech from ``root`` into ``out``; see the module docstring.

    ``transcripts`` defaults to ``root/transcripts.tsv`` when that file exists.
    """
    root, labels, skips = Path(root), CORPUS_LABELS[NAME], SkipLog(NAME)
    if not root.is_dir():
        raise FileNotFoundError(f"RAVDESS root {root} is not a folder")
    if transcripts is None and (root / "transcripts.tsv").is_file():
        transcripts = root / "transcripts.tsv"
    texts = read_transcripts(Path(transcripts)) if transcripts is not None else STATEMENTS

    found: dict[str, Utterance] = {}
    for path in sorted(p for p in root.rglob("*.wav") if not p.name.startswith(".")):
        match = _NAME.match(path.stem)
        if not match:
            continue
        modality, vocal, emotion, intensity, statement, repetition, actor = match.groups()
        if modality != "03" or vocal != "01":
            skips.not_selected["song" if vocal == "02" else f"modality {modality}"] += 1
            continue
        key = f"{NAME}-{path.stem}"
        if key in found:
            log.info("ravdess: %s duplicates %s; ignored", path, found[key].path)
            continue
        if emotion not in EMOTIONS:
            raw_label(labels, emotion, f"{path}: emotion code")  # raises UnknownLabelError
        actor_id = int(actor)
        if actor_id not in ACTOR_FOLD:
            raise ValueError(f"{path}: actor {actor} is outside RAVDESS's 24 actors (no EmoBox fold)")
        if statement not in texts:
            log.warning("ravdess: no transcript for statement %s (%s)", statement, path.name)
        found[key] = Utterance(
            key, path, EMOTIONS[emotion], labels.from_raw(EMOTIONS[emotion]),
            group=ACTOR_FOLD[actor_id], speaker=actor, gender="M" if actor_id % 2 else "F",
            transcript=texts.get(statement),
            extra={"intensity": int(intensity), "statement": statement, "repetition": int(repetition)},
        )  # fmt: skip
    if not found:
        raise FileNotFoundError(f"no RAVDESS speech clip (03-01-EE-II-SS-RR-AA.wav) under {root}")
    rows = probe_utterances(NAME, list(found.values()), skips, workers=workers)
    group_of = {row["key"]: ACTOR_FOLD[int(row["speaker"])] for row in rows}
    folds = leave_one_group_out(rows, group_of, range(1, NUM_FOLDS + 1))
    return finish(Path(out), NAME, rows, labels, folds, skips, full_size=FULL_SIZE)

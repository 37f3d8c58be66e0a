"""SAVEE (Surrey Audio-Visual Expressed Emotion): 4 male speakers, 480 utterances, 44.1 kHz.

Two layouts are read, anywhere below ``root``:

* the original release ``AudioData/{DC,JE,JK,KL}/{a,d,f,h,n,sa,su}NN.wav``;
* the common flat re-upload ``DC_a01.wav`` (e.g. Kaggle's ``ALL/`` folder).

Keys are EmoBox's ``savee-<SPK>-<code><NN>``; folds are EmoBox's: leave one speaker out in the
order JE, KL, DC, JK (fold 1 tests JE), train = the other three speakers, no valid split.
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

NAME = "savee"
FULL_SIZE = 480
#: EmoBox's fold order: fold k tests FOLD_SPEAKERS[k-1].
FOLD_SPEAKERS = ("JE", "KL", "DC", "JK")
_ORIGINAL = re.compile(r"^([a-z]+)(\d+)$")  # AudioData/DC/sa01.wav
_FLAT = re.compile(r"^([A-Z]{2})_([a-z]+)(\d+)$")  # DC_sa01.wav


def _parse(path: Path) -> tuple[str, str, str] | None:
    """(speaker, emotion code, number) of a SAVEE file name, or None for other files."""
    flat = _FLAT.match(path.stem)
    if flat:
        return flat.group(1), flat.group(2), flat.group(3)
    original = _ORIGINAL.match(path.stem)
    if original and path.parent.name in FOLD_SPEAKERS:
        return path.parent.name, original.group(1), original.group(2)
    return None


def prepare_savee(root: Path, out: Path, workers: int = 1) -> PreparedCorpus:
    """Prepare SAVEE from ``root`` (either layout) into ``out``; see the module docstring."""
    root, labels, skips = Path(root), CORPUS_LABELS[NAME], SkipLog(NAME)
    if not root.is_dir():
        raise FileNotFoundError(f"SAVEE root {root} is not a folder")
    found: dict[str, Utterance] = {}
    for path in sorted(p for p in root.rglob("*.wav") if not p.name.startswith(".")):
        parsed = _parse(path)
        if parsed is None:
            continue
        speaker, code, number = parsed
        if speaker not in FOLD_SPEAKERS:
            raise ValueError(f"{path}: speaker {speaker!r} is not a SAVEE speaker {FOLD_SPEAKERS}")
        key = f"{NAME}-{speaker}-{code}{number}"
        if key in found:
            log.info("savee: %s duplicates %s; ignored", path, found[key].path)
            continue
        label = raw_label(labels, code, f"{path}: emotion code")
        found[key] = Utterance(key, path, code, label, group=speaker, speaker=speaker, gender="M")
    if not found:
        raise FileNotFoundError(
            f"no SAVEE clip under {root}: expected AudioData/{{DC,JE,JK,KL}}/<code>NN.wav or DC_<code>NN.wav"
        )
    rows = probe_utterances(NAME, list(found.values()), skips, workers=workers)
    group_of = {row["key"]: row["speaker"] for row in rows}
    folds = leave_one_group_out(rows, group_of, FOLD_SPEAKERS)
    return finish(Path(out), NAME, rows, labels, folds, skips, full_size=FULL_SIZE)

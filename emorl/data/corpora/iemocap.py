"""IEMOCAP (USC SAIL), 4-class protocol: 5531 utterances of 10 speakers in 5 sessions, 16 kHz.

Reads ``SessionN/dialog/EmoEvaluation/<dialog>.txt`` (not its sub-folders ``Categorical/``,
``Attribute/``, ``Self-evaluation/``), whose summary lines are
``[START - END]<TAB>TURN<TAB>LABEL<TAB>[V, A, D]``; the clip is
``SessionN/sentences/wav/<dialog>/<TURN>.wav`` and the transcript, when
``SessionN/dialog/transcriptions/<dialog>.txt`` exists, its ``TURN [START-END]: text`` line.
``root`` is the folder holding ``Session1`` ... ``Session5`` (or its ``IEMOCAP_full_release``).

Only EmoBox's 4 classes are selected (neu, hap, exc -> happy, ang, sad); fru, sur, fea, dis, oth
and xxx are counted as not selected. Keys are ``iemocap-<TURN>``; the speaker is ``SesNN`` plus
the first letter of the turn's last part (``Ses01F_impro01_M003`` -> ``Ses01M``, male).
Folds: 5, leave one session out (fold k tests Session k), no valid split.
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
from emorl.labels import CORPUS_LABELS, LabelSet

NAME = "iemocap"
FULL_SIZE = 5531
NUM_SESSIONS = 5
#: Every label of an EmoEvaluation summary line; those outside CORPUS_LABELS["iemocap"] are dropped.
ALL_RAW_LABELS = ("neu", "hap", "exc", "sad", "ang", "fru", "sur", "fea", "dis", "oth", "xxx")
_SUMMARY = re.compile(r"^\[\s*[\d.]+\s*-\s*[\d.]+\s*\]\s+(\S+)\s+(\S+)\s+\[")
_TRANSCRIPT = re.compile(r"^(\S+)\s+\[[\d.]+\s*-\s*[\d.]+\]:\s*(.*)$")
_SESSION = re.compile(r"^Session(\d+)$")


def read_evaluation(path: Path) -> list[tuple[int, str, str]]:
    """(line number, turn, raw label) of every summary line of an EmoEvaluation file."""
    found = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            match = _SUMMARY.match(line)
            if match:
                found.append((lineno, match.group(1), match.group(2)))
    return found


def read_transcriptions(path: Path) -> dict[str, str]:
    """Turn -> text from a ``transcriptions/<dialog>.txt`` file ({} when it does not exist)."""
    if not path.is_file():
        return {}
    texts = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _TRANSCRIPT.match(line.strip())
        if match:
            texts[match.group(1)] = match.group(2).strip()
    return texts


def _session_utterances(session_dir: Path, number: int, labels: LabelSet, skips: SkipLog) -> list[Utterance]:
    eval_dir = session_dir / "dialog" / "EmoEvaluation"
    if not eval_dir.is_dir():
        raise FileNotFoundError(f"IEMOCAP: {eval_dir} does not exist")
    found = []
    files = sorted(p for p in eval_dir.iterdir() if p.suffix == ".txt" and not p.name.startswith("."))
    for eval_file in (p for p in files if p.is_file()):  # sub-folders (Categorical/, ...) are not read
        dialog = eval_file.stem
        texts = read_transcriptions(session_dir / "dialog" / "transcriptions" / f"{dialog}.txt")
        for lineno, turn, raw in read_evaluation(eval_file):
            if raw not in ALL_RAW_LABELS:
                raw_label(labels, raw, f"{eval_file}:{lineno} (turn {turn})")  # raises
            if raw not in labels.raw_map:
                skips.not_selected[raw] += 1
                continue
            turn_dialog, _, last = turn.rpartition("_")
            gender = last[:1].upper()
            if gender not in ("F", "M"):
                raise ValueError(f"{eval_file}:{lineno}: turn {turn!r} does not end in _F<NNN> or _M<NNN>")
            wav = session_dir / "sentences" / "wav" / turn_dialog / f"{turn}.wav"
            found.append(
                Utterance(
                    f"{NAME}-{turn}", wav, raw, labels.from_raw(raw), group=number,
                    speaker=f"Ses{number:02d}{gender}", gender=gender, transcript=texts.get(turn),
                )
            )  # fmt: skip
    return found


def prepare_iemocap(root: Path, out: Path, workers: int = 1) -> PreparedCorpus:
    """Prepare IEMOCAP's 4-class set from ``root`` into ``out``; see the module docstring."""
    root, labels, skips = Path(root), CORPUS_LABELS[NAME], SkipLog(NAME)
    sessions: list[tuple[int, Path]] = []
    looked = [root, root / "IEMOCAP_full_release", root / "IEMOCAP"]
    for base in looked:
        if base.is_dir():
            sessions = sorted(
                (int(m.group(1)), p) for p in base.iterdir() if p.is_dir() and (m := _SESSION.match(p.name))
            )
        if sessions:
            break
    else:
        where = "\n  ".join(str(b) for b in looked)
        raise FileNotFoundError(
            f"cannot find IEMOCAP's Session1..Session5 folders; looked in:\n  {where}\n"
            "pass --root the folder that holds Session1 ... Session5"
        )
    found: dict[str, Utterance] = {}
    for number, session_dir in sessions:
        for utt in _session_utterances(session_dir, number, labels, skips):
            if utt.key in found:
                log.warning("iemocap: turn %s listed twice; the first is kept", utt.key)
                continue
            found[utt.key] = utt
    rows = probe_utterances(NAME, list(found.values()), skips, workers=workers)
    group_of = {row["key"]: found[row["key"]].group for row in rows}
    folds = leave_one_group_out(rows, group_of, range(1, NUM_SESSIONS + 1))
    return finish(Path(out), NAME, rows, labels, folds, skips, full_size=FULL_SIZE)

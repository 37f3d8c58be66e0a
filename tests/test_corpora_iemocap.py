from collections import Counter, defaultdict
from pathlib import Path

import pytest

from emorl.data.corpora import PREPARERS, make_track2, prepare_iemocap
from emorl.labels import UnknownLabelError
from tests.test_corpora_common import (
    assert_same_folds_as_emobox,
    assert_track2,
    emobox_rows,
    wav_bytes,
    write_clips,
)

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
OTHER_LABELS = ("fru", "sur", "fea", "dis", "oth", "xxx")


def summary_block(start: float, turn: str, label: str) -> str:
    """An EmoEvaluation block: the summary line, then the evaluators' lines."""
    return (
        f"[{start:.4f} - {start + 2.5:.4f}]\t{turn}\t{label}\t[2.5000, 3.0000, 3.5000]\n"
        "C-E2:\tNeutral;\t()\nC-E3:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n"
    )


def build_iemocap(root: Path, turns: list[tuple[int, str, str]], extra_per_dialog: bool = True) -> int:
    """IEMOCAP's layout for (session, turn, label) triples; returns how many non-4-class lines it added.

    Each dialog also gets a non-4-class turn (its clip exists: it must be dropped by label) and an
    EmoEvaluation/Categorical/ file whose 4-class line names a turn with a clip (sub-folders must
    not be read)."""
    dialogs: dict[tuple[int, str], list[tuple[str, str]]] = defaultdict(list)
    for session, turn, label in turns:
        dialogs[(session, turn.rpartition("_")[0])].append((turn, label))
    clips, others = [], 0
    for (session, dialog), entries in dialogs.items():
        sdir = root / f"Session{session}"
        if extra_per_dialog:
            entries = entries + [(f"{dialog}_M9{len(entries):02d}", OTHER_LABELS[others % len(OTHER_LABELS)])]
            others += 1
        eval_dir = sdir / "dialog" / "EmoEvaluation"
        (eval_dir / "Categorical").mkdir(parents=True, exist_ok=True)
        blocks = [summary_block(3.0 * i, turn, label) for i, (turn, label) in enumerate(entries)]
        text = HEADER + "".join(blocks)
        (eval_dir / f"{dialog}.txt").write_text(text)
        ghost = f"{dialog}_F999"
        (eval_dir / "Categorical" / f"{dialog}_e1_cat.txt").write_text(summary_block(0.0, ghost, "neu"))
        clips += [sdir / "sentences" / "wav" / dialog / f"{turn}.wav" for turn, _ in entries]
        clips.append(sdir / "sentences" / "wav" / dialog / f"{ghost}.wav")
    write_clips(clips, wav_bytes(16000))
    return others


@pytest.fixture(scope="module")
def iemocap_build(shared_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("iemocap_raw") / "IEMOCAP_full_release"
    turns = []
    for row in emobox_rows(shared_data_dir, "iemocap"):
        session = int(row["wav"].split("/Session")[1][0])
        turns.append((session, row["key"].removeprefix("iemocap-"), row["emo"]))
    others = build_iemocap(root, turns)
    # one dialog has its transcription file
    first_session, first_turn, _ = turns[0]
    dialog = first_turn.rpartition("_")[0]
    tdir = root / f"Session{first_session}" / "dialog" / "transcriptions"
    tdir.mkdir(parents=True)
    (tdir / f"{dialog}.txt").write_text(f"{first_turn} [006.2901-008.2357]: Excuse me.\nM: [LAUGHTER]\n")
    prepared = prepare_iemocap(root.parent, tmp_path_factory.mktemp("iemocap_out"))
    return prepared, others, first_turn


@pytest.mark.shared_data
def test_gives_emobox_keys_and_folds(iemocap_build, shared_data_dir):
    prepared, others, first_turn = iemocap_build
    assert PREPARERS["iemocap"] is prepare_iemocap
    rows = prepared.rows()
    assert len(rows) == 5531
    assert_same_folds_as_emobox(prepared, shared_data_dir, "iemocap")
    assert [len(prepared.split(k, "test")) for k in range(1, 6)] == [1085, 1023, 1151, 1031, 1241]
    emobox = {row["key"]: row["emo"] for row in emobox_rows(shared_data_dir, "iemocap")}
    assert all(row["emo"] == emobox[row["key"]] for row in rows)
    canonical = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
    assert Counter(row["label"] for row in rows) == Counter(canonical[e] for e in emobox.values())
    summary = prepared.extra["summary"]
    assert sum(summary["not_selected"].values()) == others
    assert set(summary["not_selected"]) == set(("fru", "sur", "fea", "dis", "oth", "xxx"))
    assert summary["skipped"] == {"missing": 0, "unreadable": 0}
    by_key = {row["key"]: row for row in rows}
    assert by_key["iemocap-Ses01F_impro04_M000"]["speaker"] == "Ses01M"
    for row in rows:
        assert row["gender"] == row["key"].rpartition("_")[2][0]
        assert row["speaker"] == row["key"][8:13] + row["gender"]
        assert row["sample_rate"] == 16000 and row["channel"] is None
    assert by_key[f"iemocap-{first_turn}"]["transcript"] == "Excuse me."


@pytest.mark.shared_data
def test_track2(iemocap_build, shared_data_dir, tmp_path):
    prepared = iemocap_build[0]
    selection = shared_data_dir / "emobox" / "track2" / "IEMOCAP_selected_balenced.jsonl"
    track2 = make_track2(prepared.root, selection, tmp_path / "track2")
    test = assert_track2(track2, "iemocap_track2")
    assert test[0]["key"] == "iemocap-Ses02F_impro03_F019"
    assert Counter(row["corpus_emo"] for row in test if row["label"] == "happy") == {"exc": 43, "hap": 17}


def test_missing_clip_is_skipped_and_counted(tmp_path, caplog):
    turns = [
        (1, "Ses01F_impro01_F000", "neu"),
        (1, "Ses01F_impro01_M000", "ang"),
        (2, "Ses02M_script01_1_F003", "exc"),
    ]
    build_iemocap(tmp_path, turns, extra_per_dialog=False)
    (tmp_path / "Session1" / "sentences" / "wav" / "Ses01F_impro01" / "Ses01F_impro01_M000.wav").unlink()
    prepared = prepare_iemocap(tmp_path, tmp_path / "out")
    keys = [row["key"] for row in prepared.rows()]
    assert keys == ["iemocap-Ses01F_impro01_F000", "iemocap-Ses02M_script01_1_F003"]
    assert prepared.rows()[1]["label"] == "happy" and prepared.rows()[1]["emo"] == "exc"
    assert prepared.extra["summary"]["skipped"]["missing"] == 1
    assert "iemocap-Ses01F_impro01_M000" in caplog.text
    assert prepared.folds == [1, 2, 3, 4, 5]
    assert len(prepared.split(1, "test")) == 1 and prepared.split(3, "test") == []


def test_unknown_label_names_file_and_label(tmp_path):
    build_iemocap(tmp_path, [(1, "Ses01F_impro01_F000", "neu"), (1, "Ses01F_impro01_F001", "hapy")],
                  extra_per_dialog=False)
    with pytest.raises(UnknownLabelError, match=r"Ses01F_impro01\.txt:\d+ .*'hapy'"):
        prepare_iemocap(tmp_path, tmp_path / "out")


def test_no_session_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="Session1..Session5"):
        prepare_iemocap(tmp_path, tmp_path / "out")

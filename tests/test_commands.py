"""`emorl data ...` front-end: real runs and clear errors (exit status 2 with a one-line message, no traceback)."""

import json

import pytest

from emorl.cli import main
from tests.test_corpora_common import wav_bytes, write_clips


def _run(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def _flat_savee(root):
    stems = [f"{code}{n:02d}" for code in ("a", "d", "f", "h", "sa", "su") for n in (1, 2)]
    stems += [f"n{n:02d}" for n in (1, 2, 3, 4)]
    paths = [root / f"{spk}_{stem}.wav" for spk in ("DC", "JE", "JK", "KL") for stem in stems]
    write_clips(paths, wav_bytes(44100, frames=4410))  # 0.1 s: `data check` refuses clips under 25 ms
    return paths


def test_data_prepare_then_check(tmp_path, capsys):
    _flat_savee(tmp_path / "raw")
    out = tmp_path / "prepared"
    assert _run(["data", "prepare", "savee", "--root", str(tmp_path / "raw"), "--out", str(out)]) == 0
    meta = json.loads((out / "corpus.json").read_text())
    assert meta["corpus"] == "savee" and meta["folds"] == [1, 2, 3, 4]
    assert len((out / "savee.jsonl").read_text().splitlines()) == 64
    # the tiny clips are 0.1 s of low-level noise: fine for `check`
    assert _run(["data", "check", str(out)]) == 0


def test_data_prepare_errors_are_messages_not_tracebacks(tmp_path, capsys):
    code = _run(["data", "prepare", "iemocap", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("emorl data: error:") and "Traceback" not in err
    code = _run(["data", "prepare", "savee", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--wav-dir", str(tmp_path)])
    assert code == 2 and "--wav-dir is for MELD only" in capsys.readouterr().err


def test_data_check_of_a_folder_that_is_not_prepared(tmp_path, capsys):
    assert _run(["data", "check", str(tmp_path)]) == 2
    assert "not a prepared corpus" in capsys.readouterr().err


def test_data_help_lists_the_subcommands(capsys):
    assert _run(["data", "--help"]) == 0
    out = capsys.readouterr().out
    for word in ("prepare", "import-emobox", "track2", "synth", "check"):
        assert word in out


def test_zoo_list_and_tiny_through_the_command(tmp_path, capsys):
    assert _run(["zoo", "list"]) == 0
    assert "wavlm-large" in capsys.readouterr().out
    assert _run(["zoo", "tiny", "wavlm-large", "--out", str(tmp_path / "tiny")]) == 0
    assert (tmp_path / "tiny" / "config.json").is_file()
    assert _run(["zoo", "tiny", "no-such-model", "--out", str(tmp_path / "x")]) == 2
    assert "not a model of the zoo" in capsys.readouterr().err

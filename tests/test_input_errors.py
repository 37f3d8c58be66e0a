"""Bad manifests and label maps: one-line errors naming the field or key and what is expected (issue 14, item 3)."""

import json

import pytest
import soundfile as sf

from emorl.commands import run_command
from emorl.data.check import check_corpus
from emorl.data.corpora import import_emobox
from emorl.data.manifest import ManifestError, load_prepared_corpus, write_prepared_corpus
from emorl.labels import LabelMapError, LabelSet, validate_label_map
from tests.corpus_factory import tone

LABELS = LabelSet("t", ("happy", "sad"), {"happy": "happy", "sad": "sad"})


def _corpus(tmp_path):
    rows = []
    for key, label in (("a", "happy"), ("b", "sad")):
        path = tmp_path / "audio" / f"{key}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(220, 0.5), 16000)
        rows.append({"key": key, "wav": str(path), "emo": label, "label": label})
    return write_prepared_corpus(tmp_path / "prep", "t", rows, LABELS, {1: {"train": ["a"], "test": ["b"]}})


def _edit_first_row(corpus, **fields):
    lines = corpus.manifest_path.read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), **fields})
    corpus.manifest_path.write_text("\n".join(lines) + "\n")


def _one_line_error(capsys, argv) -> str:
    assert run_command(argv) != 0
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


@pytest.mark.parametrize(("fields", "message"), [
    ({"wav": 12345}, "t.jsonl:1: field 'wav' must be a non-empty path string, not 12345"),
    ({"wav": ""}, "t.jsonl:1: field 'wav' must be a non-empty path string, not \"\""),
    ({"label": None}, "t.jsonl:1: field 'label' must be a class name (string), not null"),
    ({"channel": "left"}, "t.jsonl:1: field 'channel' must be null (channels averaged) or a 1-based channel number, not \"left\""),
    ({"channel": 0}, "field 'channel' must be null (channels averaged) or a 1-based channel number, not 0"),
])
def test_a_field_of_the_wrong_type_is_named(tmp_path, capsys, fields, message):
    corpus = _corpus(tmp_path)
    _edit_first_row(corpus, **fields)
    with pytest.raises(ManifestError) as err:
        check_corpus(corpus.root)
    assert message in str(err.value)
    assert message in _one_line_error(capsys, ["data", "check", str(corpus.root)])


@pytest.mark.parametrize(("label_map", "message"), [
    (["happy", "sad"], "label_map.json: expected a JSON object of raw label -> class name, not a list"),
    (3, "label_map.json: expected a JSON object of raw label -> class name, not a number"),
    ({"happy": "happy", "sad": None}, "label_map.json: key 'sad' maps to nothing (null); expected a class name"),
    ({"happy": "happy", "sad": ""}, "label_map.json: key 'sad' maps to nothing (a string); expected a class name"),
    ({"happy": "happy", "sad": "sad", "bor": "Boredom"},
     "label_map.json: key 'bor' maps to 'boredom', a class the corpus does not have (its classes: ['happy', 'sad'])"),
])
def test_a_bad_label_map_of_a_prepared_corpus_is_named(tmp_path, capsys, label_map, message):
    corpus = _corpus(tmp_path)
    (corpus.root / "label_map.json").write_text(json.dumps(label_map))
    with pytest.raises(LabelMapError) as err:
        load_prepared_corpus(corpus.root)
    assert message in str(err.value)
    assert message in _one_line_error(capsys, ["data", "check", str(corpus.root)])


def _emobox(tmp_path, label_map):
    (tmp_path / "audio").mkdir(parents=True)
    rows = []
    for key, emo in (("x1", "hap"), ("x2", "sad")):
        sf.write(tmp_path / "audio" / f"{key}.wav", tone(220, 0.5), 16000)
        rows.append({"key": key, "dataset": "toy", "wav": f"audio/{key}.wav", "emo": emo, "channel": 1})
    manifest = tmp_path / "toy.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "label_map.json").write_text(json.dumps(label_map))
    return manifest


def test_an_imported_label_map_that_creates_a_class_without_utterances_is_refused(tmp_path, capsys):
    manifest = _emobox(tmp_path, {"hap": "Happy", "sad": "Sad", "fea": "Fear"})
    with pytest.raises(LabelMapError, match=r"key 'fea' maps to 'fear', a class the corpus does not have"):
        import_emobox(manifest, tmp_path, tmp_path / "out")
    err = _one_line_error(capsys, ["data", "import-emobox", "--manifest", str(manifest), "--audio-root",
                                   str(tmp_path), "--out", str(tmp_path / "out2")])
    assert "label_map.json (for 2 utterances): key 'fea' maps to 'fear'" in err


def test_an_imported_label_map_given_as_a_list_is_named(tmp_path):
    manifest = _emobox(tmp_path, [["hap", "Happy"], ["sad", "Sad"]])
    with pytest.raises(LabelMapError, match=r"label_map.json: expected a JSON object .* not a list"):
        import_emobox(manifest, tmp_path, tmp_path / "out")


def test_a_good_label_map_passes_and_imports_average_channels(tmp_path):
    assert validate_label_map({"hap": "Happy"}) == {"hap": "Happy"}
    manifest = _emobox(tmp_path, {"hap": "Happy", "sad": "Sad"})
    corpus = import_emobox(manifest, tmp_path, tmp_path / "out")
    assert corpus.label_set.classes == ("happy", "sad")
    assert [row["channel"] for row in corpus.rows()] == [None, None]  # EmoBox's 1 = "the clip's audio"

"""`emorl data import-hf` / `export-hf`: Hugging Face datasets built here (never the network).

The source rows come from tone corpora (tests/corpus_factory.py) and the espeak-ng demo corpus;
every import is compared row by row (key, label, speaker, fold membership) with its source.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import soundfile as sf
import yaml

from emorl.commands import run_command
from emorl.data.check import check_corpus
from emorl.data.hf_export import export_hf
from emorl.data.hf_folds import assign_speaker_folds
from emorl.data.hf_import import import_hf
from emorl.data.manifest import SPLITS, load_prepared_corpus, update_rows, write_prepared_corpus
from emorl.labels import LabelSet, UnknownLabelError
from tests.corpus_factory import make_tiny_corpus, tone

LABELS = ("neutral", "happy", "sad", "angry")


def source_rows(corpus):
    """The tiny corpus's rows with the split of fold 1 each row is in."""
    test = {row["key"] for row in corpus.split(1, "test")}
    return [{**row, "split": "test" if row["key"] in test else "train"} for row in corpus.rows()]


def hf_dataset(rows, audio="path", labels="string", split_column=True):
    """A datasets.Dataset of the rows: audio as embedded bytes (an Audio column) or as paths (a string
    column: `save_to_disk` would embed the files of an Audio column), labels as strings or ClassLabel ids."""
    cells = [{"bytes": Path(r["wav"]).read_bytes(), "path": Path(r["wav"]).name} if audio == "bytes"
             else r["wav"] for r in rows]
    label_feature = datasets.ClassLabel(names=list(LABELS)) if labels == "classlabel" else datasets.Value("string")
    data = {"utt": [r["key"].removeprefix("tiny-") for r in rows], "audio": cells,
            "emotion": [LABELS.index(r["label"]) if labels == "classlabel" else r["label"] for r in rows],
            "speaker": [r["speaker"] for r in rows]}
    features = {"utt": datasets.Value("string"),
                "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")} if audio == "bytes"
                else datasets.Value("string"),
                "emotion": label_feature, "speaker": datasets.Value("string")}
    if split_column:
        data["part"], features["part"] = [r["split"] for r in rows], datasets.Value("string")
    ds = datasets.Dataset.from_dict(data, features=datasets.Features(features))
    return ds.cast_column("audio", datasets.Audio(decode=False)) if audio == "bytes" else ds


def by_key(rows):
    return {r["key"]: (r["label"], r.get("speaker")) for r in rows}


def fold_keys(prepared):
    return {k: {s: {r["key"] for r in prepared.split(k, s)} for s in SPLITS} for k in prepared.folds}


@pytest.fixture
def tiny(tmp_path):
    return make_tiny_corpus(tmp_path / "tiny")


def test_paths_string_labels_and_a_split_column(tiny, tmp_path):
    rows = source_rows(tiny)
    hf_dataset(rows).save_to_disk(str(tmp_path / "ds"))
    prepared = import_hf(str(tmp_path / "ds"), tmp_path / "out", name="tiny", key_column="utt", split_column="part")
    assert by_key(prepared.rows()) == by_key(rows)
    assert fold_keys(prepared)[1]["test"] == {r["key"] for r in rows if r["split"] == "test"}
    assert fold_keys(prepared)[1]["train"] == {r["key"] for r in rows if r["split"] == "train"}
    assert [r["wav"] for r in prepared.rows()] == [r["wav"] for r in rows]  # paths kept, nothing copied
    assert not any((tmp_path / "out" / "audio").iterdir())
    assert prepared.label_set.classes == LABELS
    report = check_corpus(prepared.root)
    assert report.ok and report.num_clips == len(rows)


def test_bytes_and_classlabel_ids_from_parquet_splits_are_written_once(tiny, tmp_path):
    rows = source_rows(tiny)
    folder = tmp_path / "parquet" / "data"
    for split in ("train", "test"):
        part = [r for r in rows if r["split"] == split]
        hf_dataset(part, audio="bytes", labels="classlabel", split_column=False).to_parquet(
            str(folder / f"{split}-00000-of-00001.parquet"))
    prepared = import_hf(str(tmp_path / "parquet"), tmp_path / "out", name="tiny", key_column="utt",
                         label_column="emotion")
    assert by_key(prepared.rows()) == by_key(rows)  # ClassLabel ids resolved to their names
    assert fold_keys(prepared)[1]["test"] == {r["key"] for r in rows if r["split"] == "test"}
    audio = sorted((tmp_path / "out" / "audio").iterdir())
    assert len(audio) == len(rows) and all(p.suffix == ".wav" for p in audio)
    source = {r["key"]: Path(r["wav"]).read_bytes() for r in rows}
    assert all(Path(r["wav"]).read_bytes() == source[r["key"]] for r in prepared.rows())
    stamps = {p: p.stat().st_mtime_ns for p in audio}
    import_hf(str(tmp_path / "parquet"), tmp_path / "out", name="tiny", key_column="utt", label_column="emotion")
    assert {p: p.stat().st_mtime_ns for p in audio} == stamps  # the second import rewrites no clip
    assert check_corpus(prepared.root).ok


def test_a_single_split_gets_seeded_speaker_independent_folds(tiny, tmp_path):
    rows = source_rows(tiny)
    hf_dataset(rows, split_column=False).to_parquet(str(tmp_path / "all.parquet"))
    prepared = import_hf(str(tmp_path / "*.parquet"), tmp_path / "out", name="tiny", key_column="utt")
    assert prepared.folds == [1, 2, 3, 4, 5]  # the default, one of the 5 speakers tested in each
    speaker = {r["key"]: r["speaker"] for r in rows}
    tested = []
    for k, splits in fold_keys(prepared).items():
        test_speakers = {speaker[key] for key in splits["test"]}
        assert len(test_speakers) == 1 and not test_speakers & {speaker[key] for key in splits["train"]}
        assert splits["train"] | splits["test"] == set(speaker)
        tested += test_speakers
    assert sorted(tested) == sorted(set(speaker.values()))
    again = import_hf(str(tmp_path / "*.parquet"), tmp_path / "again", name="tiny", key_column="utt")
    assert fold_keys(again) == fold_keys(prepared)  # seeded: the same folds every time
    from_keys = import_hf(str(tmp_path / "*.parquet"), tmp_path / "pattern", name="tiny", key_column="utt",
                          speaker_column="utt", speaker_pattern=r"^(s\d+)-")  # the speaker inside another column
    assert by_key(from_keys.rows()) == by_key(rows) and fold_keys(from_keys) == fold_keys(prepared)


def test_speaker_fold_assignment_is_seeded_and_balanced():
    counts = {f"s{i}": 10 for i in range(12)}
    first = assign_speaker_folds(counts, 4, seed=0)
    assert first == assign_speaker_folds(counts, 4, seed=0)
    assert first != assign_speaker_folds(counts, 4, seed=1)
    assert sorted(list(first.values()).count(k) for k in range(1, 5)) == [3, 3, 3, 3]
    with pytest.raises(ValueError, match="12 speakers cannot fill 13"):
        assign_speaker_folds(counts, 13, seed=0)


def test_leave_one_split_out_tests_each_split_in_turn(tiny, tmp_path):
    rows = source_rows(tiny)
    session = {s: f"session{i}" for i, s in enumerate(["s1", "s2", "s3", "s4", "s5"], start=1)}
    dd = datasets.DatasetDict({
        name: hf_dataset([r for r in rows if session[r["speaker"]] == name], split_column=False)
        for name in sorted(set(session.values()))})
    dd.save_to_disk(str(tmp_path / "ds"))
    prepared = import_hf(str(tmp_path / "ds"), tmp_path / "out", name="tiny", key_column="utt",
                         leave_one_split_out=True)
    folds = fold_keys(prepared)
    assert prepared.folds == [1, 2, 3, 4, 5]
    for k in prepared.folds:
        assert {r["speaker"] for r in rows if r["key"] in folds[k]["test"]} == {f"s{k}"}
        assert len(folds[k]["train"]) == len(rows) - len(folds[k]["test"])


def test_an_unnamed_split_is_one_line_error_naming_the_fix(tiny, tmp_path, capsys):
    rows = source_rows(tiny)
    datasets.DatasetDict({"a": hf_dataset(rows[:20], split_column=False),
                          "b": hf_dataset(rows[20:], split_column=False)}).save_to_disk(str(tmp_path / "ds"))
    err = one_line_error(capsys, ["data", "import-hf", str(tmp_path / "ds"), "--out", str(tmp_path / "o"),
                                  "--key-column", "utt"])
    assert err.startswith("emorl data: error: split(s) ['a', 'b']") and "--splits NAME=test" in err
    assert run_command(["data", "import-hf", str(tmp_path / "ds"), "--out", str(tmp_path / "o"),
                        "--key-column", "utt", "--splits", "a=train,b=test"]) == 0
    assert len(load_prepared_corpus(tmp_path / "o").split(1, "test")) == len(rows) - 20


def one_line_error(capsys, argv):
    capsys.readouterr()  # what came before (datasets' progress bars)
    code = run_command(argv)
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith(("INFO ", "DEBUG "))]  # emorl's log lines
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("emorl data: error: ")
    return lines[0]


def test_a_hub_id_goes_through_datasets_load_dataset_with_its_config(tiny, tmp_path, monkeypatch):
    rows = source_rows(tiny)
    for r in rows:
        r["gender"] = "female" if r["speaker"] in ("s1", "s2") else "M"
    train = hf_dataset([r for r in rows if r["split"] == "train"], split_column=False)
    test = hf_dataset([r for r in rows if r["split"] == "test"], split_column=False)
    local = datasets.DatasetDict({
        "train": train.add_column("gender", [r["gender"] for r in rows if r["split"] == "train"]),
        "validation": test.select(range(2)).add_column("gender", ["M", "M"]),
        "test": test.select(range(2, len(test))).add_column("gender", ["M"] * (len(test) - 2))})
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kw: calls.append((args, kw)) or local)
    prepared = import_hf("someone/tiny-emotions", tmp_path / "out", config="clean", key_column="utt")
    assert calls == [(("someone/tiny-emotions", "clean"), {})]  # the cache, no streaming
    assert prepared.name == "tiny_emotions"
    assert {len(prepared.split(1, s)) for s in SPLITS} == {len(train), 2, len(test) - 2}
    genders = {r["speaker"]: r["gender"] for r in prepared.rows()}
    assert genders["s1"] == "F" and genders["s3"] == "M"


def test_bytes_without_a_file_name_get_the_extension_their_content_says(tmp_path):
    from emorl.data.hf_audio import audio_suffix, probe_cell, safe_name

    sf.write(tmp_path / "a.flac", tone(200, 0.5), 16000)
    flac = (tmp_path / "a.flac").read_bytes()
    assert audio_suffix(flac, None) == ".flac" and audio_suffix(flac, "clip.ogg") == ".ogg"
    (tmp_path / "audio_dir").mkdir()
    path, info = probe_cell({"bytes": flac, "path": None}, "k/1", tmp_path / "audio_dir", [])
    assert path.suffix == ".flac" and info.num_frames == 8000
    assert safe_name("k/1") != safe_name("k_1") and safe_name("k_1") == "k_1"


def test_numbers_without_classlabel_names_need_a_label_map(tiny, tmp_path, capsys):
    rows = source_rows(tiny)
    ds = hf_dataset(rows).remove_columns("emotion").add_column("emotion", [LABELS.index(r["label"]) for r in rows])
    ds.save_to_disk(str(tmp_path / "ds"))
    base = ["data", "import-hf", str(tmp_path / "ds"), "--out", str(tmp_path / "o"), "--split-column", "part"]
    err = one_line_error(capsys, base)
    assert "holds numbers and no ClassLabel names" in err and "--label-map" in err
    (tmp_path / "ids.json").write_text(json.dumps({str(i): label for i, label in enumerate(LABELS)}))
    assert run_command(base + ["--label-map", str(tmp_path / "ids.json"), "--key-column", "utt", "--name", "tiny"]) == 0
    assert by_key(load_prepared_corpus(tmp_path / "o").rows()) == by_key(rows)


def test_a_missing_column_and_a_label_outside_the_map_are_one_line_errors(tiny, tmp_path, capsys):
    hf_dataset(source_rows(tiny)).save_to_disk(str(tmp_path / "ds"))
    base = ["data", "import-hf", str(tmp_path / "ds"), "--out", str(tmp_path / "o"), "--split-column", "part"]
    err = one_line_error(capsys, base + ["--speaker-column", "actor"])
    assert "'actor' (--speaker-column) is not in the dataset" in err and "'speaker'" in err
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({"neutral": "neutral", "happy": "happy", "angry": "angry"}))
    err = one_line_error(capsys, base + ["--label-map", str(label_map)])
    assert "raw label 'sad' is not in the label map" in err and "--skip-unknown-labels" in err
    with pytest.raises(UnknownLabelError):
        import_hf(str(tmp_path / "ds"), tmp_path / "o2", split_column="part", label_map=str(label_map))

    assert run_command(base + ["--label-map", str(label_map), "--skip-unknown-labels"]) == 0
    summary = load_prepared_corpus(tmp_path / "o").extra["summary"]
    assert summary["skipped"]["unknown-label"] == 10 and summary["utterances"] == 30
    assert "sad" not in load_prepared_corpus(tmp_path / "o").label_set.classes
    label_map.write_text(json.dumps({"neutral": "neutral", "happy": "happy", "angry": "angry", "sad": None}))
    prepared = import_hf(str(tmp_path / "ds"), tmp_path / "o3", split_column="part", label_map=str(label_map))
    assert prepared.extra["summary"]["not_selected"] == {"sad": 10}  # null: left out, not an error


def test_bad_audio_cells_are_skipped_counted_and_named(tiny, tmp_path, caplog):
    rows = source_rows(tiny)[::5]  # 8 rows, 2 of each of 4 speakers
    ds = hf_dataset(rows, audio="bytes", split_column=False)
    cells = ds.to_dict()["audio"]
    cells[1] = {"bytes": b"RIFF\x10\x00\x00\x00WAVEgarbage", "path": "x.wav"}  # unreadable
    cells[2] = {"bytes": b"", "path": "y.wav"}  # empty
    cells[3] = {"bytes": None, "path": str(tmp_path / "gone.wav")}  # missing
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, tone(200, 3.0), 16000)
    cells[4] = {"bytes": None, "path": str(long_clip)}  # too long for --max-seconds 2
    # a plain {bytes, path} struct column: save_to_disk would embed (and need) the files of an Audio column
    ds = ds.remove_columns("audio").add_column("audio", cells, feature={"bytes": datasets.Value("binary"),
                                                                         "path": datasets.Value("string")})
    ds.save_to_disk(str(tmp_path / "ds"))
    prepared = import_hf(str(tmp_path / "ds"), tmp_path / "out", name="tiny", key_column="utt",
                         speaker_column="speaker", folds=2, max_seconds=2.0)
    summary = prepared.extra["summary"]
    keys = [r["key"] for r in rows]
    assert summary["skipped"] == {"missing": 1, "unreadable": 1, "empty": 1, "too-long": 1}
    assert summary["skipped_clips"] == {"unreadable": [keys[1]], "empty": [keys[2]], "missing": [keys[3]],
                                        "too-long": [keys[4]]}
    assert [r["key"] for r in prepared.rows()] == [keys[0], *keys[5:]]
    assert sorted(p.name for p in (tmp_path / "out" / "audio").iterdir()) == sorted(
        f"{k}.wav" for k in [keys[0], *keys[5:]])  # the unreadable cell's file is not left behind
    assert keys[1] in caplog.text and "cannot be read" in caplog.text


def test_a_hub_id_offline_is_one_line_naming_hf_hub_offline_and_the_cache(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(Path.cwd())}
    command = ("import sys; from emorl.commands import run_command; "  # run_command: no lightning import
               f"sys.exit(run_command(['data', 'import-hf', 'someone/no-such-corpus', '--out', {str(tmp_path / 'o')!r}]))")
    done = subprocess.run([sys.executable, "-c", command], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.startswith("emorl")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert "HF_HUB_OFFLINE" in lines[0] and str(tmp_path / "hf") in lines[0]


def two_fold_corpus(tmp_path):
    """The tiny corpus with two speaker folds, prosody on some rows and a rationale on one."""
    tiny = make_tiny_corpus(tmp_path / "src")
    rows = tiny.rows()
    folds = {k: {"test": [r["key"] for r in rows if r["speaker"] in test],
                 "train": [r["key"] for r in rows if r["speaker"] not in test]}
             for k, test in ((1, {"s1", "s2"}), (2, {"s3", "s4", "s5"}))}
    labels = LabelSet("tiny", LABELS, {label.title(): label for label in LABELS})
    rows = [{**r, "emo": r["label"].title()} for r in rows]
    prepared = write_prepared_corpus(tmp_path / "prepared", "tiny", rows, labels, folds)
    prosody = {"measures": {"pitch_mean_hz": 150.0, "rate": None}, "bins": {"pitch": "low"}, "caption": "pitch: low"}
    update_rows(prepared, {rows[0]["key"]: {"prosody": prosody, "rationale": "Low and slow, so neutral."},
                           rows[1]["key"]: {"prosody": prosody}})
    return prepared, rows, prosody


def test_export_loads_without_emorl_with_classlabels_prosody_and_a_card(tmp_path, capsys):
    prepared, rows, prosody = two_fold_corpus(tmp_path)
    out = tmp_path / "hf"
    assert run_command(["data", "export-hf", str(prepared.root), "--out", str(out), "--with-audio",
                        "--hub-id", "me/tiny-emotions"]) == 0
    printed = capsys.readouterr().out
    assert f"hf upload me/tiny-emotions {out} . --repo-type dataset" in printed
    script = f"""
import json, sys, datasets
dd = datasets.load_from_disk({str(out)!r})
first = dd["fold_1_train"]
print(json.dumps({{"splits": {{s: d.num_rows for s, d in dd.items()}}, "names": first.features["label"].names,
    "audio": type(first.features["audio"]).__name__, "rows": [r for d in dd.values() for r in d],
    "emorl": any(m.split(".")[0] == "emorl" for m in sys.modules)}}, default=lambda b: b.hex()))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["emorl"] is False and got["audio"] == "Audio" and got["names"] == list(LABELS)
    assert got["splits"] == {"fold_1_train": 24, "fold_1_test": 16, "fold_2_train": 16, "fold_2_test": 24}
    wav = {r["key"]: Path(r["wav"]).read_bytes().hex() for r in rows}
    for row in got["rows"]:
        assert row["audio"]["bytes"] == wav[row["key"]]
        assert LABELS[row["label"]] == next(r["label"] for r in rows if r["key"] == row["key"])
    first = next(r for r in got["rows"] if r["key"] == rows[0]["key"])
    assert json.loads(first["prosody"]) == prosody and first["prosody_caption"] == "pitch: low"
    assert first["rationale"] == "Low and slow, so neutral." and first["emo"] == "Neutral"
    front = yaml.safe_load((out / "README.md").read_text().split("---")[1])
    assert "license" in front and front["license"] is None
    assert {s["name"]: s["num_examples"] for s in front["dataset_info"]["splits"]} == got["splits"]
    assert [f["name"] for f in front["dataset_info"]["features"]][:3] == ["key", "audio", "label"]


def test_round_trip_keeps_rows_labels_folds_and_reasoning(tmp_path):
    prepared, rows, prosody = two_fold_corpus(tmp_path)
    export_hf(prepared.root, tmp_path / "hf", with_audio=True)
    back = import_hf(str(tmp_path / "hf"), tmp_path / "back")
    assert back.name == "tiny"  # an export's own name (its dataset column), so its keys stay as they are
    assert by_key(back.rows()) == by_key(prepared.rows())
    assert fold_keys(back) == fold_keys(prepared)
    assert back.label_set.classes == prepared.label_set.classes
    row = next(r for r in back.rows() if r["key"] == rows[0]["key"])
    assert row["prosody"] == prosody and row["rationale"] == "Low and slow, so neutral."
    paths = export_hf(prepared.root, tmp_path / "hf_paths")  # audio as paths: nothing is copied back
    assert paths["fold_1_test"][0]["audio"]["bytes"] is None
    again = import_hf(str(tmp_path / "hf_paths"), tmp_path / "back2", name="tiny")
    assert {r["key"]: r["wav"] for r in again.rows()} == {r["key"]: r["wav"] for r in prepared.rows()}


def test_the_commands_are_listed(capsys):
    from emorl.cli import overview

    with pytest.raises(SystemExit):
        run_command(["data", "--help"])
    print(overview())
    out = capsys.readouterr().out
    assert out.count("import-hf") == 2 and out.count("export-hf") == 2


def test_export_refuses_a_folder_in_use(tiny, tmp_path, capsys):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    err = one_line_error(capsys, ["data", "export-hf", str(tiny.root), "--out", str(tmp_path / "used")])
    assert "exists and is not empty" in err


@pytest.mark.espeak
def test_the_demo_corpus_round_trips_and_checks(espeak, tmp_path):
    from emorl.data.corpora import prepare_ravdess
    from emorl.data.synth import synthesize

    synthesize(tmp_path / "raw", actors=2, sentences_per_emotion=1)
    native = prepare_ravdess(tmp_path / "raw", tmp_path / "native")
    export_hf(native.root, tmp_path / "hf", with_audio=True)
    imported = import_hf(str(tmp_path / "hf"), tmp_path / "imported", name="ravdess")
    assert {r["key"]: (r["label"], r["speaker"], r["transcript"]) for r in imported.rows()} == {
        r["key"]: (r["label"], r["speaker"], r["transcript"]) for r in native.rows()}
    assert fold_keys(imported) == fold_keys(native)  # folds without the demo's actors: empty test files
    assert check_corpus(imported.root).ok

    # the same clips as paths with RAVDESS's raw labels and no split: emorl's speaker folds
    rows = native.rows()
    plain = datasets.Dataset.from_dict({"file": [r["wav"] for r in rows], "emotion": [r["emo"] for r in rows],
                                        "actor": [r["speaker"] for r in rows],
                                        "id": [r["key"].removeprefix("ravdess-") for r in rows]})
    plain.to_parquet(str(tmp_path / "plain.parquet"))
    by_paths = import_hf(str(tmp_path / "plain.parquet"), tmp_path / "by_paths", name="ravdess", audio_column="file",
                         speaker_column="actor", label_map="ravdess", folds=2)
    assert by_key(by_paths.rows()) == by_key(rows) and by_paths.label_set == native.label_set
    assert [r["wav"] for r in by_paths.rows()] == [r["wav"] for r in rows]
    for splits in fold_keys(by_paths).values():  # each actor is tested in exactly one of the 2 folds
        assert len({r["speaker"] for r in rows if r["key"] in splits["test"]}) == 1
    assert check_corpus(by_paths.root).ok


@pytest.mark.slow
def test_an_imported_corpus_trains_and_tests(tiny, tmp_path, capsys):
    from emorl.cli import main
    from tests.test_acoustic_baseline import _config

    hf_dataset(source_rows(tiny), audio="bytes", labels="classlabel").save_to_disk(str(tmp_path / "ds"))
    prepared = import_hf(str(tmp_path / "ds"), tmp_path / "out", name="tiny", key_column="utt",
                         split_column="part", label_column="emotion")
    config = _config(tmp_path, prepared.root)
    main(["fit", "--config", str(config), "--trainer.max_epochs", "5"])
    ckpt = next((tmp_path / "runs" / "tiny" / "version_0" / "checkpoints").glob("*.ckpt"))
    main(["test", "--config", str(config), "--ckpt_path", str(ckpt)])
    out = capsys.readouterr().out
    assert "tiny" in out and "UA" in out.upper()


@pytest.mark.slow
def test_the_import_bench_compares_the_three_arms_on_the_same_rows(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_import", Path(__file__).parents[1] / "tools" / "bench_import.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--rows", "48", "--keep", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    assert all(f"\n{arm:<10}      48 " in out for arm in bench.ARMS)
    assert "same keys, labels and speakers in every arm: yes" in out
    assert len(list((tmp_path / "work" / "out_hf_bytes" / "audio").iterdir())) == 48

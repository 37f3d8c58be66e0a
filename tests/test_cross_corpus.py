"""EMO-RL Table 2 / EmoBox track 2 end to end: a cross config's structure, trained on a tiny MELD, tested
zero-shot on tiny track-2 sets made by `make_track2` (the code behind `emorl data track2`)."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from emorl import tiny_models
from emorl.cli import main
from emorl.data.corpora.emobox import make_track2
from emorl.labels import CROSS_CORPUS_LABELS
from tests.corpus_factory import make_tiny_corpus

ROOT = Path(__file__).resolve().parents[1]
MELD = ("neutral", "happy", "sad", "surprise", "disgust", "angry", "fear")
TRACK2 = list(CROSS_CORPUS_LABELS.classes)


def test_every_probe_model_has_a_cross_config():
    probes = {p.name.removesuffix("_meld.yaml") for p in (ROOT / "configs" / "probe").glob("*_meld.yaml")}
    cross = {p.name.removesuffix("_meld_cross.yaml") for p in (ROOT / "configs" / "probe").glob("*_meld_cross.yaml")}
    assert probes and cross == probes
    for name in cross:
        path = ROOT / "configs" / "probe" / f"{name}_meld_cross.yaml"
        config = yaml.safe_load(path.read_text())
        assert config["model"]["init_args"]["upstream"] == name
        assert config["data"]["classes"] == TRACK2
        assert sorted(config["data"]["test_sets"]) == ["iemocap", "ravdess", "savee"]
        assert path.read_text().splitlines()[2].strip("# ").startswith(
            f"emorl test --config configs/probe/{name}_meld_cross.yaml --ckpt_path runs/probe_{name}_meld_cross/")


def _track2_set(tmp_path, corpus: str, folder: str, labels) -> Path:
    """A tiny prepared corpus named like the real one, and its balanced track-2 selection (2 per emotion)."""
    prepared = make_tiny_corpus(tmp_path / corpus, name=corpus, labels=labels, speakers=("s1", "s2"),
                                per_speaker_label=1, test_speakers=("s2",))
    picks = []
    for row in prepared.rows():
        if row["label"] in TRACK2:
            stem = row["key"].removeprefix(f"{corpus}-")
            # SAVEE keys are savee-<speaker folder>-<file stem>; the others <corpus>-<file stem>
            name = "/".join(stem.split("-", 1)) if corpus == "savee" else f"{folder}/{stem}"
            picks.append({"wav_filename": f"{name}.wav", "label": row["label"], "speaker": row["speaker"]})
    selection = tmp_path / f"{corpus.upper()}_selected_balenced.jsonl"
    selection.write_text("".join(json.dumps(p) + "\n" for p in picks))
    out = tmp_path / f"{corpus}_track2"
    make_track2(prepared.root, selection, out)
    return out


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory) -> Path:
    return tiny_models.build_tiny("wavlm-large", tmp_path_factory.mktemp("cross_models") / "wavlm-large")


def test_a_meld_cross_config_runs_fit_then_test_on_the_track2_sets(tmp_path, tiny_wavlm, capsys):
    meld = make_tiny_corpus(tmp_path / "meld", name="meld", labels=MELD, per_speaker_label=1, with_valid=True)
    sets = {
        "ravdess": _track2_set(tmp_path, "ravdess", "Actor_01", ("neutral", "calm", "happy", "sad", "angry")),
        "savee": _track2_set(tmp_path, "savee", "", ("angry", "disgust", "happy", "neutral", "sad")),
        "iemocap": _track2_set(tmp_path, "iemocap", "happy", ("neutral", "happy", "angry", "sad")),
    }
    config = yaml.safe_load((ROOT / "configs" / "probe" / "wavlm-large_meld_cross.yaml").read_text())
    config["trainer"].update(max_epochs=2, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                             log_every_n_steps=1)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    config["model"]["init_args"].update(upstream=str(tiny_wavlm), cache_dir=str(tmp_path / "cache"), hidden_dim=16)
    config["data"].update(data_dir=str(meld.root), batch_size=8)
    for name, spec in config["data"]["test_sets"].items():
        spec["path"] = str(sets[name])
    path = tmp_path / "cross.yaml"
    path.write_text(yaml.safe_dump(config))

    main(["fit", "--config", str(path)])
    run = tmp_path / "runs" / "probe_wavlm-large_meld_cross"
    ckpt = next((run / "version_0" / "checkpoints").glob("*.ckpt"))
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["class_names"] == TRACK2  # a 4-class probe, as in EmoBox
    assert checkpoint["state_dict"]["classifier.weight"].shape[0] == 4

    capsys.readouterr()
    main(["test", "--config", str(path), "--ckpt_path", str(ckpt)])
    out = capsys.readouterr().out
    for name in ("ravdess", "savee", "iemocap"):
        assert name in out
        rows = [json.loads(line) for line in (run / "version_1" / "predictions" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 4 * 2 and {r["label"] for r in rows} == set(TRACK2)
        assert {r["prediction"] for r in rows} <= set(TRACK2)  # never an answer outside the 4 classes

    # a 7-class MELD probe is tested on the same sets with data.classes null: its extra answers count as wrong
    main(["fit", "--config", str(path), "--data.classes", "null", "--trainer.max_epochs", "1"])
    seven = next((run / "version_2" / "checkpoints").glob("*.ckpt"))
    with pytest.raises(ValueError, match="label ids would not match"):
        main(["test", "--config", str(path), "--ckpt_path", str(seven)])
    main(["test", "--config", str(path), "--ckpt_path", str(seven), "--data.classes", "null"])
    latest = max(run.glob("version_*/predictions/savee.jsonl"), key=lambda p: int(p.parts[-3].split("_")[1]))
    rows = [json.loads(line) for line in latest.read_text().splitlines()]
    assert len(rows) == 8 and {r["prediction"] for r in rows} <= set(MELD)

"""Zero-shot and SFT LightningModules end to end through `emorl`, on tiny corpora and tiny models."""

import json

import numpy as np
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emorl.cli import main
from emorl.lalm.answers import clips_from_batch, label_ids
from emorl.models.checkpoints import check_trainable_weights
from emorl.models.sft import SFTLALM, sft_target
from emorl.prompts import PromptBuilder
from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import reference_sft_loss, tiny_model_dir

ZERO_SHOT = "configs/lalm/qwen2_audio_zeroshot_{}.yaml"
CPU = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--data.num_workers", "0"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("lalm_corpus"), per_speaker_label=1)


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fmt", ["direct", "cot"])
def test_zero_shot_test_writes_metrics_predictions_and_sample_answers(fmt, corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["test", "--config", str(repo_root() / ZERO_SHOT.format(fmt)), *CPU,
          "--model.init_args.model", str(tiny_model_dir("qwen2-audio")), "--model.init_args.dtype", "float32",
          "--model.init_args.max_new_tokens", "6", "--data.data_dir", str(corpus.root)])
    out = capsys.readouterr().out
    assert "tiny" in out and "parse" in out
    version = tmp_path / "runs" / f"qwen2_audio_zeroshot_{fmt}" / "version_0"
    rows = _rows(version / "predictions" / "tiny.jsonl")
    assert len(rows) == 4  # the held-out speaker's 4 clips
    assert set(rows[0]) == {"key", "label", "prediction", "text"}
    events = EventAccumulator(str(version)).Reload()
    assert "test/tiny/answers/text_summary" in events.Tags()["tensors"]
    assert "test/tiny/parse_rate" in events.Tags()["scalars"]


def _zero_shot_test_answering(texts, corpus, tmp_path, monkeypatch, *args):
    """``emorl test`` of the direct zero-shot config whose model answers ``texts`` in turn (no generation);
    the predictions file's rows. The labels are read as ``answer_batch`` reads them."""
    answers = iter(texts)

    def fake_answer(backbone, prompts, batch, max_new_tokens=256, stop_strings=None, reading=None):
        said = [next(answers) for _ in batch["key"]]
        return said, label_ids(said, prompts.class_names, reading or prompts.format.reading), None

    monkeypatch.setattr("emorl.models.zeroshot.answer_batch", fake_answer)
    main(["test", "--config", str(repo_root() / ZERO_SHOT.format("direct")), *CPU,
          "--model.init_args.model", str(tiny_model_dir("qwen2-audio")), "--model.init_args.dtype", "float32",
          "--data.data_dir", str(corpus.root), "--data.batch_size", "4", *args])
    return _rows(tmp_path / "runs" / "qwen2_audio_zeroshot_direct" / "version_0" / "predictions" / "tiny.jsonl")


def test_unparsable_answers_count_as_wrong_and_lower_the_parse_rate(corpus, tmp_path, monkeypatch, capsys):
    """A model that never names an option scores 0 with parse rate 0, and nothing crashes."""
    monkeypatch.chdir(tmp_path)
    rows = _zero_shot_test_answering(["I cannot tell.", "<answer>sad</answer>", "", "<answer>bored</answer>"],
                                     corpus, tmp_path, monkeypatch)
    assert [r["prediction"] for r in rows] == [None, "sad", None, None]
    table = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny")).split()
    # one parsable answer out of four; right only if that clip was sad; the direct prompt reads leniently (*)
    assert table[0] == "tiny" and table[-1] == "25.00*"
    expected_wa = 25.0 if rows[1]["label"] == "sad" else 0.0
    assert float(table[2]) == expected_wa


@pytest.mark.parametrize("reading, predictions, parse", [
    ("lenient", ["sad", "sad", "sad", None], "75.00*"),  # the direct prompt's own reading, marked
    ("strict", [None, "sad", None, None], "25.00"),      # the <answer> block only, naming one option
])
def test_zero_shot_reading_is_a_named_option_the_table_shows(reading, predictions, parse, corpus, tmp_path,
                                                             monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rows = _zero_shot_test_answering(["it sounds sad", "<answer>sad</answer>", "<answer>sad or angry</answer>",
                                      "I cannot tell"], corpus, tmp_path, monkeypatch,
                                     "--model.init_args.answer_reading", reading)
    assert [r["prediction"] for r in rows] == predictions
    out = capsys.readouterr().out
    assert next(line for line in out.splitlines() if line.startswith("tiny")).split()[-1] == parse
    assert ("lenient reading" in out) == (reading == "lenient")


def test_zero_shot_runs_the_omni_thinker_too(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["test", "--config", str(repo_root() / ZERO_SHOT.format("direct")), *CPU,
          "--model.init_args.model", str(tiny_model_dir("qwen2.5-omni")), "--model.init_args.dtype", "float32",
          "--model.init_args.max_new_tokens", "4", "--model.init_args.shuffle_options", "true",
          "--data.data_dir", str(corpus.root)])
    run = tmp_path / "runs" / "qwen2_audio_zeroshot_direct-qwen2.5-omni-7b-thinker" / "version_0"  # named after the model
    assert len(_rows(run / "predictions" / "tiny.jsonl")) == 4


def test_predict_writes_one_line_per_clip_with_the_reasoning_text(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["predict", "--config", str(repo_root() / ZERO_SHOT.format("cot")), *CPU,
          "--model.init_args.model", str(tiny_model_dir("qwen2-audio")), "--model.init_args.dtype", "float32",
          "--model.init_args.max_new_tokens", "6", "--data.data_dir", str(corpus.root)])
    rows = _rows(tmp_path / "runs" / "qwen2_audio_zeroshot_cot" / "version_0" / "predictions.jsonl")
    assert len(rows) == 4 and {"key", "emotion", "text"} <= set(rows[0])


def test_shuffled_options_depend_on_the_clip_not_the_batch():
    builder = PromptBuilder(["neutral", "happy", "sad", "angry"], "ir", shuffle_options=True, seed=1)
    first = builder.messages(["a", "b", "c"])
    again = builder.messages(["c", "a"])
    assert first[0] == again[1] and first[2] == again[0]
    orders = {builder.question(str(k)) for k in range(30)}
    assert len(orders) > 5


def test_sft_targets_use_reasoning_only_when_the_row_has_it():
    assert sft_target("ir", "sad", {"rationale": "low voice"}) == "<answer>sad</answer>"
    assert sft_target("eur", "sad", {"rationale": "low voice"}) == "<think>low voice</think><answer>sad</answer>"
    assert sft_target("eur", "sad", {}) == "<answer>sad</answer>"
    tags = {"transcript": "t", "keywords": "k", "prosody": "p", "synthesis": "s"}
    assert sft_target("esr", "sad", {"reasoning": tags}).startswith("<think><transcript>t</transcript>")


def test_sft_loss_equals_the_models_own_loss_on_answer_tokens_only(corpus):
    """Oracle: transformers' loss with labels = -100 on the prompt, on the plain forward path."""
    module = SFTLALM(["neutral", "happy", "sad", "angry"], model=str(tiny_model_dir("qwen2-audio")),
                     dtype="float32", lora={"r": 4, "alpha": 8, "dropout": 0.0})
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal(12000).astype(np.float32) * 0.1)
    batch = {"wave": wave[None], "wave_lengths": torch.tensor([12000]), "label": torch.tensor([2]),
             "key": ["k"], "row": [{}]}
    loss, tokens = module.sft_loss(batch)
    backbone = module.backbone
    expected, target_tokens, _ = reference_sft_loss(
        backbone, module.prompts.messages(["k"]), clips_from_batch(batch), ["<answer>sad</answer>"])
    assert tokens == target_tokens
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_sft_fit_saves_only_lora_weights_and_test_reloads_them(corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load((repo_root() / "configs/sft/lora/sft_ir_ravdess.yaml").read_text())
    config["trainer"].update({"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False,
                              "num_sanity_val_steps": 0})
    config["model"]["init_args"].update({"model": str(tiny_model_dir("qwen2-audio")), "dtype": "float32",
                                        "gradient_checkpointing": False, "lr": 1e-2, "max_new_tokens": 6,
                                        "warmup_steps": 2})
    config["data"].update({"data_dir": str(corpus.root), "num_workers": 0, "val_fraction": 0.25})
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    ckpt = next((tmp_path / "runs" / "sft_ir_ravdess_lora" / "version_0" / "checkpoints").glob("*.ckpt"))
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    keys = list(saved["state_dict"])
    assert keys and all("lora_" in k for k in keys), keys[:5]
    assert saved["emorl_trainable_keys"] == sorted(keys)
    main(["test", "--config", str(path), "--ckpt_path", str(ckpt)])
    assert "tiny" in capsys.readouterr().out
    assert len(_rows(tmp_path / "runs" / "sft_ir_ravdess_lora" / "version_1" / "predictions" / "tiny.jsonl")) == 4

    # trained from an init checkpoint that has since moved: testing needs only the checkpoint itself
    saved["hyper_parameters"]["init_checkpoint"] = str(tmp_path / "moved" / "sft.ckpt")
    torch.save(saved, tmp_path / "from_init.ckpt")
    main(["test", "--config", str(path), "--ckpt_path", str(tmp_path / "from_init.ckpt")])
    assert len(_rows(tmp_path / "runs" / "sft_ir_ravdess_lora" / "version_2" / "predictions" / "tiny.jsonl")) == 4


def test_a_checkpoint_with_other_lora_options_is_refused(tmp_path):
    module = SFTLALM(["happy", "sad"], model=str(tiny_model_dir("qwen2-audio")), dtype="float32",
                     lora={"r": 2, "alpha": 4})
    checkpoint = {"state_dict": {"model.something.lora_A.weight": torch.zeros(1)}, "emorl_trainable_keys": ["x"]}
    with pytest.raises(RuntimeError, match="do not fit this model"):
        check_trainable_weights(module, checkpoint)


def repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_predict_on_a_folder_of_audio_files_and_a_manifest(corpus, tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "clips" / "sub"
    folder.mkdir(parents=True)
    wavs = sorted((corpus.root / "audio").glob("*.wav"))[:3] if (corpus.root / "audio").is_dir() else \
        sorted(corpus.root.parent.rglob("*.wav"))[:3]
    for wav in wavs:
        shutil.copy(wav, folder / wav.name)
    (folder / "broken.wav").write_bytes(b"not audio")
    common = ["--config", str(repo_root() / ZERO_SHOT.format("cot")), *CPU,
              "--model.init_args.model", str(tiny_model_dir("qwen2-audio")), "--model.init_args.dtype", "float32",
              "--model.init_args.max_new_tokens", "4", "--data.data_dir", str(corpus.root)]
    main(["predict", *common, "--data.predict_path", str(tmp_path / "clips")])
    rows = _rows(tmp_path / "runs" / "qwen2_audio_zeroshot_cot" / "version_0" / "predictions.jsonl")
    assert sorted(r["key"] for r in rows) == sorted(f"sub/{w.stem}" for w in wavs)  # the broken clip is skipped
    assert all(r["test_set"] == "clips" for r in rows)
    manifest = tmp_path / "list.jsonl"
    manifest.write_text("\n".join(json.dumps({"wav": str(folder / w.name), "key": f"m{i}"}) for i, w in enumerate(wavs)))
    main(["predict", *common, "--data.predict_path", str(manifest)])
    rows = _rows(tmp_path / "runs" / "qwen2_audio_zeroshot_cot" / "version_1" / "predictions.jsonl")
    assert [r["key"] for r in rows] == ["m0", "m1", "m2"]


def test_predict_path_errors_are_clear(tmp_path):
    from emorl.data.folder import PredictInputError, list_clips

    with pytest.raises(PredictInputError, match="does not exist"):
        list_clips(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictInputError, match="no audio file"):
        list_clips(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "a"}\n')
    with pytest.raises(PredictInputError, match="'wav' field"):
        list_clips(bad)

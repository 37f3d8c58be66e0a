"""EmotionThinker-Base: the prosody-description task, its wording, the task mix, and that the tiny model learns it.

Hand-written expectations for the target wording; the claims reader of emorl.prosody.claims as an
independent oracle that the wording reads back; transformers' own loss as the oracle of the
description loss; counts over many keys for the task draw; and a short SFT of the tiny random
Qwen2-Audio on tones of set pitch and level whose held-out description accuracy must beat chance.
"""

import itertools
import json
import logging
from collections import Counter
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch

from emorl.lightning_cli import EmorlCLI
from emorl.data.datamodule import EmoDataModule
from emorl.data.manifest import write_prepared_corpus
from emorl.labels import LabelSet
from emorl.lalm.answers import clips_from_batch, target_ids
from emorl.models.checkpoints import keep_trainable_weights
from emorl.models.sft import SFTLALM, sft_target
from emorl.prompts import PROSODY_QUESTION
from emorl.prosody.claims import extract_claims, faithfulness
from emorl.prosody.task import (
    DIMENSION_WORDS,
    DIMENSIONS,
    LEVEL_WORDS,
    TaskMix,
    describe_prosody,
    read_description,
    row_bins,
    score_description,
)
from emorl.prosody.task_metrics import DescriptionAccuracy
from tests.lalm_fixtures import reference_sft_loss, tiny_model_dir

ROOT = Path(__file__).resolve().parents[1]
LEVELS = ("low", "normal", "high")
SR = 16_000


# -- the target wording ------------------------------------------------------------------------------
def test_the_description_of_bins_in_words():
    assert describe_prosody({"pitch": "high", "energy": "low", "rate": "normal"}) == \
        "pitch: high; loudness: soft; rate: normal"
    assert describe_prosody({"pitch": "low", "energy": "high", "rate": "high", "hnr": "low", "pauses": "high"}) == \
        "pitch: low; loudness: loud; rate: fast"
    assert describe_prosody({"pitch": "normal", "energy": "normal", "rate": "low"}) == \
        "pitch: normal; loudness: normal; rate: slow"
    # an unvoiced clip has no pitch bin: the part is left out, not guessed
    assert describe_prosody({"pitch": "unknown", "energy": "normal", "rate": "low"}) == "loudness: normal; rate: slow"
    assert describe_prosody({"energy": "high"}) == "loudness: loud"
    for nothing in (None, {}, {"pitch": "unknown", "energy": "unknown", "rate": "unknown"}, {"hnr": "low"}):
        assert describe_prosody(nothing) is None


@pytest.mark.parametrize("levels", list(itertools.product((*LEVELS, "unknown"), repeat=3)))
def test_every_description_reads_back_to_its_bins_by_both_readers(levels):
    bins = dict(zip(DIMENSIONS, levels))
    known = {d: lv for d, lv in bins.items() if lv != "unknown"}
    text = describe_prosody(bins)
    if not known:
        assert text is None
        return
    assert read_description(text) == known
    assert all(score_description(text, bins)[d] == (1 if d in known else None) for d in DIMENSIONS)
    # the claims reader (another module, other rules) reads the same levels back
    assert {c.dimension: c.level for c in extract_claims(text)} == known
    assert faithfulness(text, bins).score == 1.0


def test_reading_a_description_is_lenient_on_case_and_spacing_strict_on_words():
    assert read_description("PITCH :High;loudness:  SOFT ; rate: fast") == \
        {"pitch": "high", "energy": "low", "rate": "high"}
    # level words of another dimension are not read
    assert read_description("pitch: loud; loudness: fast; rate: slow") == {"rate": "low"}
    assert read_description("pitch: low; pitch: high") == {"pitch": "low"}  # the first mention counts
    assert read_description("rate: normal") == {"rate": "normal"}
    for nothing in ("", None, "I cannot tell.", "loudness loudness loudness", "pitch high"):
        assert read_description(nothing) == {}
    bins = {"pitch": "high", "energy": "low", "rate": "unknown"}
    assert score_description("pitch: high; loudness: loud; rate: fast", bins) == {"pitch": 1, "energy": 0, "rate": None}
    assert score_description("no idea", bins) == {"pitch": 0, "energy": 0, "rate": None}


def test_the_prompt_offers_every_word_of_the_target():
    for dim in DIMENSIONS:
        assert DIMENSION_WORDS[dim] in PROSODY_QUESTION
        assert all(word in PROSODY_QUESTION for word in LEVEL_WORDS[dim].values())
    assert "options" not in PROSODY_QUESTION.lower()  # no emotion in the description task


def test_row_bins_only_from_a_measured_row():
    assert row_bins({"prosody": {"bins": {"pitch": "high"}, "caption": "x"}}) == {"pitch": "high"}
    for row in (None, {}, {"prosody": None}, {"prosody": "pitch: high"}, {"prosody": {"caption": "x"}}):
        assert row_bins(row) is None


# -- the task mix ------------------------------------------------------------------------------------
def test_task_mix_config_forms_and_errors():
    assert TaskMix.from_config(None) is None
    assert TaskMix.from_config({"emotion": 1, "prosody": 2.5}).weights == {"emotion": 1.0, "prosody": 2.5}
    assert TaskMix.from_config(["prosody", "emotion"]).weights == {"emotion": 1.0, "prosody": 1.0}
    assert TaskMix.from_config([{"name": "prosody", "weight": 3}]).weights == {"prosody": 3.0}
    assert TaskMix.from_config({"emotion": 0, "prosody": 1}).weights == {"prosody": 1.0}  # weight 0: not drawn
    for bad, message in [({"emotions": 1}, "unknown SFT task 'emotions'"), ({"prosody": -1}, ">= 0"),
                         ({"prosody": "a lot"}, ">= 0"), ({"emotion": 0}, "at least one task"),
                         (["prosody", "prosody"], "listed twice"), ("prosody", "mapping"),
                         ({"prosody": float("nan")}, ">= 0")]:
        with pytest.raises(ValueError, match=message):
            TaskMix.from_config(bad)


def test_the_task_draw_is_reproducible_and_follows_the_weights():
    mix = TaskMix.from_config({"emotion": 1.0, "prosody": 3.0}, seed=7)
    keys = [f"clip{i}" for i in range(4000)]
    epoch0 = [mix.choose(k, 0) for k in keys]
    assert epoch0 == [TaskMix.from_config({"prosody": 3.0, "emotion": 1.0}, seed=7).choose(k, 0) for k in keys]
    assert epoch0[::-1] == [mix.choose(k, 0) for k in reversed(keys)]  # whatever the order (batch, rank)
    share = Counter(epoch0)["prosody"] / len(keys)
    assert share == pytest.approx(0.75, abs=0.03)  # binomial sd 0.007
    # a new draw per epoch (independent: same task in both epochs for 0.75^2 + 0.25^2 = 62.5 % of the clips)
    epoch1 = [mix.choose(k, 1) for k in keys]
    same = sum(a == b for a, b in zip(epoch0, epoch1)) / len(keys)
    assert same == pytest.approx(0.625, abs=0.03)
    other_seed = [TaskMix.from_config({"emotion": 1.0, "prosody": 3.0}, seed=8).choose(k, 0) for k in keys]
    assert other_seed != epoch0
    assert {TaskMix.from_config({"prosody": 1.0}).choose(k, e) for k in keys[:200] for e in range(3)} == {"prosody"}


def test_clips_without_prosody_fall_back_to_the_emotion_task_and_are_counted():
    mix = TaskMix.from_config({"prosody": 1.0})
    measured = {"prosody": {"bins": {"pitch": "high", "energy": "low", "rate": "unknown"}}}
    silent = {"prosody": {"bins": {"pitch": "unknown", "energy": "unknown", "rate": "unknown"}}}
    rows = [measured, {}, silent, {"prosody": "junk"}, None, measured]
    tasks, fallbacks = mix.plan([str(i) for i in range(6)], rows, epoch=0)
    assert tasks == ["prosody", "emotion", "emotion", "emotion", "emotion", "prosody"]
    assert fallbacks == 4


# -- the description accuracy ------------------------------------------------------------------------
def test_description_accuracy_by_hand():
    metric = DescriptionAccuracy()
    bins = [{"pitch": "high", "energy": "low", "rate": "normal"},
            {"pitch": "low", "energy": "low", "rate": "unknown"},
            {"pitch": "unknown", "energy": "unknown", "rate": "unknown"},  # nothing to check: not counted
            {"pitch": "normal", "energy": "high", "rate": "high"}]
    texts = ["pitch: high; loudness: soft; rate: fast",   # pitch right, energy right, rate wrong
             "pitch: high; loudness: soft",               # pitch wrong, energy right
             "pitch: high",
             "no idea"]                                   # every known dimension wrong (and not named)
    metric.update(texts[:2], bins[:2])
    metric.update(texts[2:], bins[2:])
    scores = {k: float(v) for k, v in metric.compute().items()}
    assert scores["pitch_acc"] == pytest.approx(1 / 3)
    assert scores["energy_acc"] == pytest.approx(2 / 3)
    assert scores["rate_acc"] == pytest.approx(0 / 2)
    assert scores["mean_acc"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert scores["named_rate"] == pytest.approx(5 / 8)  # 8 known (clip, dimension) pairs, 5 named
    assert scores["faithfulness"] == pytest.approx(3 / 5)  # claims: 3 agree, 2 contradict
    assert scores["clips"] == 3
    with pytest.raises(ValueError, match="2 descriptions for 1 clips"):
        metric.update(["a", "b"], [None])


# -- SFTLALM -----------------------------------------------------------------------------------------
CLASSES = ["neutral", "happy", "sad", "angry"]
BINS = {"pitch": "high", "energy": "low", "rate": "normal"}


def _module(**kwargs):
    return SFTLALM(CLASSES, model=str(tiny_model_dir("qwen2-audio")), dtype="float32",
                   lora={"r": 4, "alpha": 8, "dropout": 0.0}, **kwargs)


def _batch(rows, seconds=0.75):
    n = len(rows)
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((n, int(seconds * SR))).astype(np.float32) * 0.1)
    return {"wave": wave, "wave_lengths": torch.full((n,), wave.shape[1]), "label": torch.arange(n) % len(CLASSES),
            "key": [f"k{i}" for i in range(n)], "row": rows}


def test_without_tasks_the_emotion_task_is_unchanged():
    rows = [{"prosody": {"bins": BINS}}, {}, {"transcript": "hello there"}]
    batch = _batch(rows)
    plain, emotion_only = _module(), _module(tasks={"emotion": 1.0})
    assert plain.task_mix is None and plain.uses("emotion") and not plain.uses("prosody")
    assert plain.plan_tasks(batch, epoch=0) == ["emotion"] * 3
    loss, tokens = plain.sft_loss(batch, epoch=0)
    again, _ = emotion_only.sft_loss(batch, epoch=0)  # same weights (same tiny model, LoRA B = 0)
    assert loss.item() == pytest.approx(again.item(), rel=1e-6)
    ids, _ = target_ids(plain.backbone.tokenizer, [sft_target("ir", CLASSES[i], {}) for i in range(3)],
                        plain.backbone.pad_token_id)
    assert tokens == ids.ne(plain.backbone.pad_token_id).sum()
    assert plain.task_counts == Counter() and plain.fallback_tasks == 0


def test_the_description_loss_equals_the_models_own_loss_on_the_description_tokens():
    """Oracle: transformers' loss with labels = -100 on the prosody prompt, on the plain forward path."""
    module = _module(tasks={"prosody": 1.0})
    batch = _batch([{"prosody": {"bins": BINS}}])
    loss, tokens = module.sft_loss(batch, epoch=0)
    backbone = module.backbone
    expected, target_tokens, inputs = reference_sft_loss(
        backbone, [module.prosody_messages], clips_from_batch(batch), ["pitch: high; loudness: soft; rate: normal"])
    assert PROSODY_QUESTION in backbone.tokenizer.decode(inputs.input_ids[0])
    assert tokens == target_tokens
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_training_counts_tasks_and_fallbacks_and_logs_them(caplog, monkeypatch):
    module = _module(tasks={"emotion": 1.0, "prosody": 1.0}, task_seed=3)
    rows = [{"prosody": {"bins": BINS}} if i % 2 else {} for i in range(40)]
    keys = [f"k{i}" for i in range(40)]
    drawn = [module.task_mix.choose(k, 2) for k in keys]
    tasks = module.plan_tasks({"key": keys, "row": rows}, epoch=2)
    expected = [t if (t == "emotion" or rows[i]) else "emotion" for i, t in enumerate(drawn)]
    assert tasks == expected
    fallbacks = sum(t == "prosody" and not rows[i] for i, t in enumerate(drawn))
    assert fallbacks > 0 and module.fallback_tasks == fallbacks
    assert module.task_counts == Counter(expected)
    module.plan_tasks({"key": keys, "row": rows}, epoch=None)  # validation: not counted
    assert module.fallback_tasks == fallbacks
    logged = {}
    monkeypatch.setattr(module, "log_dict", lambda values, **kwargs: logged.update(values))
    with caplog.at_level(logging.WARNING, logger="emorl.models.sft"):
        module.on_train_epoch_end()
    assert logged["train/tasks/prosody_fallbacks"] == fallbacks
    assert logged["train/tasks/prosody"] == expected.count("prosody")
    assert f"{fallbacks} training clips drawn for the prosody description have no prosody bins" in caplog.text
    assert module.fallback_tasks == 0 and not module.task_counts


def test_init_checkpoint_starts_from_the_trained_weights_or_says_why_not(tmp_path):
    first = _module()
    with torch.no_grad():
        for name, param in first.named_parameters():
            if param.requires_grad:
                param.add_(0.01 * torch.arange(param.numel()).reshape(param.shape))
    checkpoint = {"state_dict": first.state_dict()}
    keep_trainable_weights(first, checkpoint)
    path = tmp_path / "base.ckpt"
    torch.save(checkpoint, path)
    second = _module(init_checkpoint=str(path))
    trained = dict(first.named_parameters())
    for name, param in second.named_parameters():
        assert torch.equal(param, trained[name]), name
    with pytest.raises(FileNotFoundError, match="no.ckpt"):
        _module(init_checkpoint=str(tmp_path / "no.ckpt"))
    with pytest.raises(RuntimeError, match="do not fit this model"):
        SFTLALM(CLASSES, model=str(tiny_model_dir("qwen2-audio")), dtype="float32", lora={"r": 2, "alpha": 4},
                init_checkpoint=str(path))


# -- end to end --------------------------------------------------------------------------------------
PITCH_HZ = {"low": 110.0, "normal": 180.0, "high": 300.0}
AMPLITUDE = {"low": 0.02, "normal": 0.08, "high": 0.3}


def _voice(f0, amplitude, seconds, rng):
    """Four harmonics of f0, modulated 4 times a second like syllables, peak ``amplitude``."""
    t = np.arange(int(seconds * SR)) / SR
    y = sum(0.5**k * np.sin(2 * np.pi * (k + 1) * f0 * t + rng.uniform(0, 6)) for k in range(4))
    y = y * (0.55 + 0.45 * np.cos(2 * np.pi * 4.0 * t))
    return (amplitude * y / np.abs(y).max()).astype(np.float32)


def tone_corpus(root: Path, speakers=("s1", "s2", "s3", "s4", "s5"), valid=(), test=("s5",), unmeasured=0):
    """Every speaker says the 9 (pitch, loudness) combinations; ``row["prosody"]["bins"]`` are the
    set levels (rate unknown), as ``emorl data prosody`` would bin them (3 well-separated levels,
    equal counts: its tertiles fall between them). The first ``unmeasured`` rows have no prosody."""
    rng = np.random.default_rng(0)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for speaker in speakers:
        for pitch, level in itertools.product(LEVELS, LEVELS):
            key = f"{speaker}-{pitch}-{level}"
            seconds = float(rng.uniform(0.8, 1.4))
            wav = root / "audio" / f"{key}.wav"
            f0, amplitude = PITCH_HZ[pitch] * rng.uniform(0.95, 1.05), AMPLITUDE[level] * rng.uniform(0.9, 1.1)
            sf.write(wav, _voice(f0, amplitude, seconds, rng), SR)
            label = {"low": "sad", "normal": "neutral", "high": "happy"}[pitch]
            bins = {"pitch": pitch, "energy": level, "rate": "unknown"}
            rows.append({"key": key, "dataset": "tones", "wav": str(wav), "length": seconds, "sample_rate": SR,
                         "emo": label, "label": label, "speaker": speaker,
                         "prosody": {"bins": bins, "caption": describe_prosody(bins), "version": 1}})
    for row in rows[:unmeasured]:
        del row["prosody"]
    splits = {"train": [r["key"] for r in rows if r["speaker"] not in (*valid, *test)],
              "test": [r["key"] for r in rows if r["speaker"] in test]}
    if valid:
        splits["valid"] = [r["key"] for r in rows if r["speaker"] in valid]
    labels = ("neutral", "happy", "sad")
    return write_prepared_corpus(root / "prepared", "tones", rows, LabelSet("tones", labels, {x: x for x in labels}),
                                 {1: splits})


class _Losses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


@pytest.mark.slow
def test_the_tiny_model_learns_to_describe_pitch_and_loudness(tmp_path):
    """36 training clips (4 speakers x 3 pitches x 3 levels), 20 epochs of batch 3 (240 steps, about
    45 s on 2 quiet cores); two held-out speakers' 18 clips are then described right far above
    chance (1/3 per dimension). Measured: pitch 18/18, loudness 18/18 (docs/prosody.md)."""
    corpus = tone_corpus(tmp_path, speakers=("s1", "s2", "s3", "s4", "s5", "s6", "s7"), valid=("s7",),
                         test=("s5", "s6"))
    datamodule = EmoDataModule(str(corpus.root), batch_size=3, eval_batch_size=18)
    module = SFTLALM(datamodule.class_names, model=str(tiny_model_dir("qwen2-audio")), lora=None, full_finetune=True,
                     train_projector=True, dtype="float32", lr=1e-3, tasks={"prosody": 1.0})
    losses = _Losses()
    trainer = L.Trainer(max_epochs=20, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=0, callbacks=[losses])
    trainer.fit(module, datamodule=datamodule)
    assert np.mean(losses.losses[-12:]) < 0.1 * np.mean(losses.losses[:12])
    trainer.test(module, datamodule=datamodule, verbose=False)
    scores = module.test_results["tones"]
    assert scores["prosody/clips"] == 18 and scores["prosody/named_rate"] == 1.0
    assert scores["prosody/pitch_acc"] >= 2 / 3, scores
    assert scores["prosody/energy_acc"] >= 2 / 3, scores
    assert "ua" not in scores  # the emotion task is not trained, so not tested


@pytest.mark.slow
def test_the_demo_config_runs_the_mix_validates_both_tasks_and_starts_stage_two(tmp_path, monkeypatch, caplog):
    """configs/demo/tiny_base_prosody.yaml, 1 short epoch on tones (a few rows unmeasured):
    both tasks are trained, validation logs val/ua and val/prosody/*, the checkpoint starts stage 2."""
    monkeypatch.chdir(tmp_path)
    corpus = tone_corpus(tmp_path / "tones", valid=("s4",), unmeasured=4)
    config = ROOT / "configs/demo/tiny_base_prosody.yaml"
    overrides = ["--model.init_args.model", str(tiny_model_dir("qwen2-audio")), "--data.data_dir", str(corpus.root),
                 "--trainer.max_epochs", "1", "--data.batch_size", "9"]
    cli = EmorlCLI(args=["--config", str(config), *overrides], run=False)
    with caplog.at_level(logging.WARNING, logger="emorl.models.sft"):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    metrics = cli.trainer.callback_metrics
    assert {"val/ua", "val/prosody/pitch_acc", "val/prosody/energy_acc", "val/prosody/mean_acc",
            "val/prosody/named_rate"} <= set(metrics)
    assert "val/prosody/rate_acc" not in metrics  # rate unknown everywhere: nothing to score
    keys = [row["key"] for row in cli.datamodule.datasets["train"].rows]
    drawn = Counter(cli.model.task_mix.choose(key, 0) for key in keys)
    unmeasured = [row["key"] for row in cli.datamodule.datasets["train"].rows if "prosody" not in row]
    fallbacks = sum(cli.model.task_mix.choose(key, 0) == "prosody" for key in unmeasured)
    assert len(unmeasured) == 4 and fallbacks == 2  # s1-low-low and s1-normal-low are drawn for prosody
    assert metrics["train/tasks/prosody_fallbacks"] == fallbacks
    assert metrics["train/tasks/prosody"] == drawn["prosody"] - fallbacks
    assert metrics["train/tasks/emotion"] == drawn["emotion"] + fallbacks
    assert "2 training clips drawn for the prosody description have no prosody bins" in caplog.text
    last = next(Path(cli.trainer.log_dir).glob("checkpoints/last.ckpt"))
    stage_two = SFTLALM(cli.datamodule.class_names, model=str(tiny_model_dir("qwen2-audio")), prompt_format="esr",
                        reasoning="template", lora=None, full_finetune=True, train_projector=True, dtype="float32",
                        init_checkpoint=str(last))
    trained = dict(cli.model.named_parameters())
    assert all(torch.equal(p, trained[n]) for n, p in stage_two.named_parameters() if p.requires_grad)
    hparams = json.loads(json.dumps(dict(cli.model.hparams), default=str))
    assert hparams["tasks"] == {"emotion": 1.0, "prosody": 1.0}

"""GRPO-PTR through GRPOLALM: hand-computed totals of a scripted group, and a fit whose switch turns on."""

import math

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emorl.data.datamodule import EmoDataModule
from emorl.data.manifest import update_rows
from emorl.lalm.generation import GenerationResult
from emorl.rl import rollout as rollout_module
from emorl.models.grpo import GRPOLALM
from emorl.rl.advantages import group_advantages
from emorl.textlm import TextLM, build_tiny_text_lm
from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import clips, run_emorl, tiny_model_dir, two_process_steps

CLASSES = ["neutral", "happy", "sad", "angry"]
PTR = {"w_format": 0.3, "w_outcome": 1.0, "w_reason": 0.5, "format": "format_eur", "outcome": "bcr",
       "accuracy_threshold": 0.0, "accuracy_window": 2}


@pytest.fixture(scope="module")
def judge_dir(tmp_path_factory):
    return build_tiny_text_lm(tmp_path_factory.mktemp("judge"), hidden_size=32)


class FakeTrainer:
    world_size = 1


def _module(judge_dir, **overrides):
    options = dict(model=str(tiny_model_dir("qwen2-audio")), dtype="float32", num_generations=3, max_new_tokens=6,
                   beta=0.0, prompt_format="eur", rewards=None, lora={"r": 2, "alpha": 4},
                   ptr=PTR, judge={"model": str(judge_dir), "dtype": "float32", "max_new_tokens": 16})
    options.update(overrides)
    return GRPOLALM(CLASSES, **options)


# Two prompts (true: angry, happy), three answers each; the marker mN sets the scripted judge's reply.
TEXTS = [
    "<think>m2 loud</think><answer>angry</answer>",    # format 1, correct, judge all 2 -> 0.25
    "<think>m5 low</think><answer>sad</answer>",       # format 1, wrong,   judge all 5 -> 1.0
    "<answer>sad</answer> m3",                         # format 0, wrong,   judge all 3 -> 0.5
    "<think>m4 bright</think><answer>happy</answer>",  # format 1, correct, judge all 4 -> 0.75
    "<think>mx flat</think><answer>neutral</answer>",  # format 1, wrong,   garbage     -> 0 (unparsable)
    "<think>mp high</think><answer>happy</answer>",    # format 1, correct, 2 of 4 at 5 -> 0.5 (unparsable)
]
REPLIES = {
    "m2": "prosody_alignment: 2\ninterpretation: 2\ncompleteness: 2\nfluency: 2",
    "m5": "prosody_alignment: 5\ninterpretation: 5\ncompleteness: 5\nfluency: 5",
    "m3": "Prosody alignment: 3/5\nInterpretation: 3/5\nCompleteness: 3/5\nFluency: 3/5",
    "m4": "**prosody_alignment**: 4\n**interpretation**: 4\n**completeness**: 4\n**fluency**: 4",
    "mx": "The answer seems fine.",
    "mp": "prosody_alignment: 5\nfluency: 5",
}
TAU0 = math.exp(0.25 - 0.75)   # group 0: correct mean 0.25 < wrong mean (1 + 0.5) / 2
EXPECTED_ON = [0.3 + 1 + 0.5 * TAU0 * 0.25, 0.3 + 0.5 * TAU0 * 1.0, 0.5 * TAU0 * 0.5,
               0.3 + 1 + 0.5 * 0.75, 0.3 + 0.0, 0.3 + 1 + 0.5 * 0.5]   # group 1: tau 1 (0.625 >= 0)
EXPECTED_OFF = [1.3, 0.3, 0.0, 1.3, 0.3, 1.3]


def _scripted(monkeypatch, module):
    """generate returns TEXTS; the judge LM answers by the marker of the answer in its prompt."""
    seen = []

    def fake_generate(backbone, prompt, max_new_tokens, num_return_sequences, **kwargs):
        n, width = len(TEXTS), 4
        return GenerationResult(
            texts=list(TEXTS), completion_ids=torch.ones(n, width, dtype=torch.long),
            completion_mask=torch.ones(n, width, dtype=torch.long), truncated=torch.zeros(n, dtype=torch.bool),
            prompt_index=torch.arange(2).repeat_interleave(3), prompt_lengths=torch.ones(2, dtype=torch.long),
            prompt=prompt, num_return_sequences=3,
        )

    def fake_judge(self, conversations, max_new_tokens, batch_size, temperature, seed=None):
        replies = []
        for conversation in conversations:
            text = conversation[1]["content"]
            seen.append(text)
            answer = text.split("<<<\n", 1)[1].split("\n>>>", 1)[0]
            replies.append(next(reply for marker, reply in REPLIES.items() if marker in answer))
        return replies

    monkeypatch.setattr(rollout_module, "generate", fake_generate)
    monkeypatch.setattr(TextLM, "generate", fake_judge)
    monkeypatch.setattr(GRPOLALM, "trainer", FakeTrainer(), raising=False)
    return seen


def _batch():
    waves = clips((0.5, 0.7))
    wave = torch.zeros(2, max(len(w) for w in waves))
    for i, w in enumerate(waves):
        wave[i, : len(w)] = torch.from_numpy(w)
    rows = [{"key": "a", "transcript": "Get out of here now.", "prosody": {"caption": "pitch: high; loudness: loud"}},
            {"key": "b", "transcript": "What a lovely day.", "prosody": {"caption": "pitch: high and rising"}}]
    return {"wave": wave, "wave_lengths": torch.tensor([len(w) for w in waves]), "label": torch.tensor([3, 1]),
            "key": ["a", "b"], "row": rows}


def test_scripted_group_totals_by_hand_through_the_real_reward_path(judge_dir, monkeypatch):
    module = _module(judge_dir)
    seen = _scripted(monkeypatch, module)
    assert module.rewards.names == ["format_eur", "bcr"]

    off = module._rollout(_batch())                      # switch off: no judge, no reasoning term
    assert off.rewards.tolist() == pytest.approx(EXPECTED_OFF) and seen == []
    assert "reasoning" not in off.components and module.ptr.judge.calls == 0

    module.ptr.switch.on = True
    on = module._rollout(_batch())
    assert on.rewards.tolist() == pytest.approx(EXPECTED_ON, abs=1e-6)
    assert on.components["reasoning"].tolist() == pytest.approx([0.25, 1.0, 0.5, 0.75, 0.0, 0.5])
    assert module.ptr.last["tau"].tolist() == pytest.approx([TAU0, 1.0])
    assert on.advantages.tolist() == pytest.approx(group_advantages(torch.tensor(EXPECTED_ON), 3)[0].tolist(), abs=1e-5)
    assert (module.ptr.judge.calls, module.ptr.judge.unparsable, module.ptr.last["unparsable"]) == (6, 2, 2)
    # each answer was judged against its own clip's row
    assert sum("What a lovely day." in text for text in seen) == 3
    assert all(("Get out of here now." in t) == ("m2" in t or "m5" in t or "m3" in t) for t in seen)
    means, counts = module.ptr.log_values()
    assert means["train/judge/fluency"] == pytest.approx((0.25 + 1 + 0.5 + 0.75 + 0 + 1) / 6)
    assert float(counts["train/judge/unparsable"]) == 2.0


def test_judge_when_off_scores_and_logs_but_does_not_reward(judge_dir, monkeypatch):
    module = _module(judge_dir, ptr={**PTR, "judge_when_off": True})
    _scripted(monkeypatch, module)
    rollout = module._rollout(_batch())
    assert rollout.rewards.tolist() == pytest.approx(EXPECTED_OFF)
    assert rollout.components["reasoning"].tolist() == pytest.approx([0.25, 1.0, 0.5, 0.75, 0.0, 0.5])
    means, _ = module.ptr.log_values()
    assert means["train/ptr/on"] == 0.0 and means["train/ptr/tau"] == pytest.approx((TAU0 + 1.0) / 2)


def test_bad_ptr_options_are_clear_errors(judge_dir):
    with pytest.raises(ValueError, match="set rewards to null"):
        _module(judge_dir, rewards=[{"name": "bcr"}])
    with pytest.raises(ValueError, match="needs a judge"):
        _module(judge_dir, judge=None)
    with pytest.raises(ValueError, match="unknown key"):
        _module(judge_dir, judge={"model": str(judge_dir), "temperature": 1.0})


class Record(L.Callback):
    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.steps.append({"on": module.ptr.last["on"], "calls": module.ptr.judge.calls,
                           "has_reasoning": "reasoning" in module.last_rollout.components,
                           "running": module.ptr.switch.running_accuracy})


def _fit(module, corpus, tmp_path, max_steps, ckpt_path=None):
    record = Record()
    trainer = L.Trainer(
        max_steps=max_steps, accelerator="cpu", enable_progress_bar=False, limit_val_batches=0,
        enable_model_summary=False, log_every_n_steps=1, callbacks=[record, L.pytorch.callbacks.ModelCheckpoint(
            dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0)],
        logger=L.pytorch.loggers.TensorBoardLogger(str(tmp_path / "runs"), name="ptr"),
    )
    L.seed_everything(0)
    trainer.fit(module, datamodule=EmoDataModule(str(corpus.root), batch_size=2, num_workers=0, seed=0),
                ckpt_path=ckpt_path)
    return record.steps


def test_fit_switches_the_reasoning_term_on_logs_it_and_checkpoints_the_switch(judge_dir, tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    update_rows(corpus, {row["key"]: {"transcript": "Kids are talking by the door.",
                                      "prosody": {"caption": "pitch: high; rate: fast", "bins": {"pitch": "high"}}}
                         for row in corpus.rows()})
    module = _module(judge_dir, num_generations=2, max_new_tokens=4, eval_max_new_tokens=2)
    steps = _fit(module, corpus, tmp_path, max_steps=4)
    # window 2, threshold 0: the first two batches fill the window, the reasoning term is on from the third
    assert [s["on"] for s in steps] == [False, False, True, True]
    assert [s["has_reasoning"] for s in steps] == [False, False, True, True]
    assert [s["calls"] for s in steps] == [0, 0, 4, 8]       # 2 prompts x 2 answers per judged batch
    assert module.ptr.judge.unparsable == 8                  # a random tiny judge writes no scores
    assert module.ptr.judge.lm is not None and not any(p.requires_grad for p in module.ptr.judge.lm.model.parameters())

    events = EventAccumulator(str(tmp_path / "runs" / "ptr" / "version_0")).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/ptr/on", "train/ptr/running_accuracy", "train/ptr/tau", "train/reward/reasoning",
                "train/reward/reasoning_std", "train/judge/prosody_alignment", "train/judge/fluency",
                "train/judge/unparsable", "train/judge/answers", "train/time_judge"):
        assert tag in scalars, tag
    assert [e.value for e in events.Scalars("train/ptr/on")] == [0.0, 0.0, 1.0, 1.0]
    assert [e.value for e in events.Scalars("train/judge/unparsable")] == [4.0, 4.0]
    assert [e.value for e in events.Scalars("train/ptr/tau")] == [1.0, 1.0]  # every reasoning score is 0

    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    switch = ckpt["emorl_ptr"]["switch"]
    assert switch["on"] and switch["rollouts"] == 4 and len(switch["history"]) == 2 and switch["switched_on_at"] == 2
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])  # no judge weights

    resumed = _module(judge_dir, num_generations=2, max_new_tokens=4, eval_max_new_tokens=2)
    assert not resumed.ptr.switch.on
    more = _fit(resumed, corpus, tmp_path, max_steps=5, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert [s["on"] for s in more] == [True] and more[0]["calls"] == 4   # the switch came back on
    assert resumed.ptr.switch.rollouts == 5


def test_observe_sums_every_ranks_counts_before_the_switch_decides():
    from emorl.rl.ptr import PTRConfig, PTRRewards

    ptr = PTRRewards(PTRConfig(accuracy_threshold=0.5, accuracy_window=1), judge=None)
    other_rank = torch.tensor([4, 4])  # the other rank: 4 of 4 right
    gather = lambda counts: torch.stack([counts, other_rank]).reshape(-1)  # noqa: E731 (all_gather's layout)
    assert ptr.observe(torch.tensor([True, False, False, False]), gather)   # (1 + 4) / 8 >= 0.5
    assert ptr.switch.running_accuracy == pytest.approx(5 / 8)
    alone = PTRRewards(PTRConfig(accuracy_threshold=0.5, accuracy_window=1), judge=None)
    assert not alone.observe(torch.tensor([True, False, False, False]))     # 1 / 4 on this rank alone


def test_datamodule_trains_a_corpus_on_the_emotionthinker_label_set(tmp_path):
    from emorl.labels import EMOTIONTHINKER_LABELS, UnknownLabelError

    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    data = EmoDataModule(str(corpus.root), num_workers=0, class_space="emotionthinker")
    assert data.class_names == list(EMOTIONTHINKER_LABELS.classes) and len(data.class_names) == 9
    data.setup("fit")
    train = data.datasets["train"]
    assert [EMOTIONTHINKER_LABELS.classes[i] for i in train.label_ids] == [r["label"] for r in train.rows]
    assert set(train.label_ids) == {0, 1, 2, 3}  # neutral happy sad angry keep their places in the 9

    odd = make_tiny_corpus(tmp_path / "odd", labels=("neutral", "frustrated"), per_speaker_label=1)
    with pytest.raises(UnknownLabelError, match="frustrated.*label_aliases"):
        EmoDataModule(str(odd.root), class_space="emotionthinker")
    mapped = EmoDataModule(str(odd.root), num_workers=0, class_space="emotionthinker",
                           label_aliases={"frustrated": "angry"})
    mapped.setup("fit")
    assert set(mapped.datasets["train"].label_ids) == {0, 3}
    with pytest.raises(ValueError, match="exclusive"):
        EmoDataModule(str(corpus.root), class_space="emotionthinker", classes=["sad", "happy"])
    with pytest.raises(UnknownLabelError, match="no label set named"):
        EmoDataModule(str(corpus.root), class_space="emotionthinker9")


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path, backbone, classes", [
    ("configs/emotionthinker_ptr.yaml", "qwen2.5-omni-7b-thinker", "emotionthinker"),
    ("configs/emotionthinker/ptr_qwen2_audio_meld.yaml", "qwen2-audio-7b-instruct", None),
])
def test_configs_hold_the_published_settings(path, backbone, classes):
    import yaml

    from emorl import zoo
    from emorl.rl.ptr import PTRConfig

    config = yaml.safe_load((ROOT / path).read_text())
    args = config["model"]["init_args"]
    ptr = PTRConfig.from_dict(args["ptr"])
    assert (ptr.w_format, ptr.w_outcome, ptr.w_reason, ptr.accuracy_threshold) == (0.3, 1.0, 0.5, 0.5)
    assert (args["num_generations"], args["beta"], args["lr"], args["rewards"]) == (8, 0.04, 1e-6, None)
    assert args["model"] == backbone and zoo.load_card(backbone).kind == "lalm"
    assert config["data"].get("class_space") == classes


def test_emotionthinker_config_fits_the_tiny_omni_thinker_with_a_tiny_judge(judge_dir, tmp_path):
    import yaml

    from emorl.cli import main

    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = yaml.safe_load((ROOT / "configs/emotionthinker/lora/emotionthinker_ptr.yaml").read_text())
    config["trainer"].update({"max_steps": 2, "accelerator": "cpu", "enable_progress_bar": False,
                              "val_check_interval": None, "limit_val_batches": 0, "num_sanity_val_steps": 0})
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    config["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    args = config["model"]["init_args"]
    args.update({"model": str(tiny_model_dir("qwen2.5-omni")), "dtype": "float32", "gradient_checkpointing": False,
                 "max_new_tokens": 6, "eval_max_new_tokens": 4, "num_generations": 2})
    args["ptr"].update({"accuracy_threshold": 0.0, "accuracy_window": 1})
    args["judge"].update({"model": str(judge_dir), "dtype": "float32", "max_new_tokens": 8})
    config["data"].update({"data_dir": str(corpus.root), "num_workers": 0, "batch_size": 2})
    path = tmp_path / "ptr.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["emorl_ptr"]["switch"]["on"] and ckpt["emorl_ptr"]["switch"]["rollouts"] == 2
    assert len(ckpt["hyper_parameters"]["class_names"]) == 9


class RecordPTRRank(L.Callback):
    """DDP test: each rank writes its switch history, its judge's count and what was logged."""

    def __init__(self, out_dir: str):
        self.out_dir, self.steps = out_dir, []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        self.steps.append({"on": module.ptr.last["on"], "local_answers": len(module.last_rollout),
                           "logged_unparsable": float(metrics.get("train/judge/unparsable", -1)),
                           "local_unparsable": module.ptr.last.get("unparsable", 0)})

    def on_train_end(self, trainer, module):
        import json
        from pathlib import Path

        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        record = {"switch": module.ptr.switch.state_dict(), "steps": self.steps, "calls": module.ptr.judge.calls}
        (Path(self.out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_two_process_ddp_switch_counts_every_rank(judge_dir, tmp_path):
    import json

    import yaml

    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = yaml.safe_load((ROOT / "configs/emotionthinker/lora/ptr_qwen2_audio_meld.yaml").read_text())
    config["trainer"].update(two_process_steps("tests.test_grpo_ptr.RecordPTRRank", tmp_path / "r"))
    args = config["model"]["init_args"]
    args.update({"model": str(tiny_model_dir("qwen2-audio")), "dtype": "float32", "gradient_checkpointing": False,
                 "max_new_tokens": 4, "eval_max_new_tokens": 2, "num_generations": 2, "logprob_micro_batch": 4})
    args["ptr"].update({"accuracy_threshold": 0.0, "accuracy_window": 1})
    args["judge"].update({"model": str(judge_dir), "dtype": "float32", "max_new_tokens": 4})
    config["data"].update({"data_dir": str(corpus.root), "num_workers": 0, "batch_size": 2})
    run_emorl("fit", config, tmp_path)
    ranks = [json.loads((tmp_path / "r" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["switch"] == ranks[1]["switch"]            # one history, one decision
    assert [total for _, total in ranks[0]["switch"]["history"]] == [2 * 2 * 2]  # both ranks' answers
    assert [s["on"] for s in ranks[0]["steps"]] == [False, True, True]
    assert ranks[0]["calls"] == ranks[1]["calls"] == 2 * 4     # each rank judges its own answers
    for step0, step1 in zip(ranks[0]["steps"][1:], ranks[1]["steps"][1:]):
        assert step0["logged_unparsable"] == step1["logged_unparsable"] == step0["local_unparsable"] + step1["local_unparsable"]

"""SFT on a mix of answer formats (``extra_formats``): each training clip's format drawn per clip and
epoch, both formats' targets trained in the configured shares, the draw reproducible."""

from collections import Counter

import pytest
import torch

import emorl.models.sft as sft_module
from emorl.models.sft import SFTLALM
from emorl.errors import EmorlError
from emorl.prompts import FORMATS, FormatMix
from tests.lalm_fixtures import tiny_model_dir

NAMES = ["neutral", "happy", "sad", "angry"]
KEYS = [f"actor{i % 7:02d}/clip{i:04d}" for i in range(2000)]


@pytest.mark.parametrize("extra, ir_share", [(["ir"], 0.5), ({"ir": 3.0}, 0.75), ({"ir": 0.25}, 0.2)])
def test_the_format_shares_follow_the_weights(extra, ir_share):
    mix = FormatMix.from_config("esr", extra, seed=0)
    counts = Counter(mix.plan(KEYS, epoch=0))
    assert set(counts) == {"esr", "ir"}
    # 2000 draws: the share's standard error is at most 1.1 points; 3.5 points is > 3 standard errors
    assert abs(counts["ir"] / len(KEYS) - ir_share) < 0.035


def test_the_draw_is_deterministic_per_seed_epoch_and_key():
    mix = FormatMix.from_config("esr", ["ir"], seed=0)
    plan = mix.plan(KEYS, epoch=1)
    assert FormatMix.from_config("esr", ["ir"], seed=0).plan(KEYS, epoch=1) == plan  # another instance, same draw
    assert mix.plan(list(reversed(KEYS)), epoch=1) == list(reversed(plan))  # the batch order does not matter
    assert mix.plan(KEYS, epoch=2) != plan  # another epoch: another draw
    assert FormatMix.from_config("esr", ["ir"], seed=1).plan(KEYS, epoch=1) != plan  # another seed: another draw
    assert mix.plan(KEYS[:50], epoch=None) == ["esr"] * 50  # validation / test: the main format only
    assert FormatMix.from_config("esr", None).plan(KEYS[:50], epoch=3) == ["esr"] * 50  # no mix


@pytest.mark.parametrize("extra, message", [
    (["xml"], "unknown prompt format 'xml'"),
    (["ir", "IR"], "listed twice"),
    (["esr"], "listed twice"),
    ({"ir": 0}, "must be a number > 0"),
    ("ir", "must be a list of format names"),
])
def test_bad_extra_formats_are_clear_errors(extra, message):
    with pytest.raises(EmorlError, match=message):
        FormatMix.from_config("esr", extra)


def test_an_unknown_format_is_refused_by_the_module_before_the_model_loads():
    with pytest.raises(EmorlError, match="extra_formats: unknown prompt format 'xml'"):
        SFTLALM(NAMES, model="no/such/model", prompt_format="esr", extra_formats=["xml"])


class _Stop(Exception):
    pass


def test_sft_trains_both_formats_targets_each_under_its_own_question(monkeypatch):
    """The module's training batch: each clip asked the IR or the ESR question, trained on a target of
    that format (checked by the format's own shape), about half each, the same draw twice."""
    module = SFTLALM(NAMES, model=str(tiny_model_dir("qwen2-audio")), dtype="float32", prompt_format="esr",
                     extra_formats=["ir"], reasoning="template", lora={"r": 4, "alpha": 8, "dropout": 0.0})
    seen = []

    def record(backbone, messages, clips):  # stop before the forward pass: the targets are built by then
        seen.append([m[-1]["content"][1]["text"] for m in messages])
        raise _Stop

    targets = []
    real_target = sft_module.sft_target
    monkeypatch.setattr(sft_module, "sft_target", lambda *a, **k: targets.append(real_target(*a, **k)) or targets[-1])
    monkeypatch.setattr(sft_module, "build_prompts", record)
    n = 200
    batch = {"wave": torch.zeros(n, 1600), "wave_lengths": torch.full((n,), 1600),
             "label": torch.tensor([i % 4 for i in range(n)]), "key": KEYS[:n],
             "row": [{"transcript": "kids are talking by the door"}] * n}

    def one_step(epoch):
        seen.clear(), targets.clear()
        with pytest.raises(_Stop):
            module.sft_loss(batch, epoch)
        return list(seen[0]), list(targets)

    questions, answers = one_step(epoch=0)
    kinds = []
    for question, target, label in zip(questions, answers, batch["label"]):
        kind = "ir" if question.endswith(FORMATS["ir"].instruction) else "esr"
        assert question.endswith(FORMATS[kind].instruction)
        assert FORMATS[kind].matches(target), (kind, target)
        assert FORMATS[kind].answer_span(target) == NAMES[int(label)]
        kinds.append(kind)
    assert 0.4 < kinds.count("ir") / n < 0.6
    assert not FORMATS["esr"].matches("<answer>happy</answer>")  # the two shapes tell the formats apart
    assert module.format_counts == Counter(kinds)
    assert one_step(epoch=0) == (questions, answers)  # the same epoch: the same formats
    assert one_step(epoch=1)[0] != questions  # the next epoch draws again
    val_questions, val_answers = one_step(epoch=None)  # validation: ESR for every clip
    assert all(q.endswith(FORMATS["esr"].instruction) and FORMATS["esr"].matches(a)
               for q, a in zip(val_questions, val_answers))

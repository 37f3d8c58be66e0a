"""Explanation evaluation in ``emorl test`` (``emorl.explanations``): prosody faithfulness and judge scores.

Aggregation by hand on scripted answers; the DDP reduction of numerators and denominators (a pure
function); a corpus without prosody; judge aggregation with
scripted judge replies; and ``emorl test`` end to end with a tiny Qwen2-Audio and a tiny judge.
"""

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from emorl.lightning_cli import EmorlCLI
from emorl.data.manifest import load_prepared_corpus, update_rows
from emorl.explanations import (
    CRITERIA,
    ExplanationEvaluation,
    count_answers,
    format_explanation_table,
    judge_arguments,
    judge_record,
    reduce_counts,
    score_answer,
    summarise,
)
from emorl.rl.judge import Judge, parse_judge_output
from tests.corpus_factory import make_tiny_corpus


def _row(**bins) -> dict:
    return {"prosody": {"bins": {"pitch": "unknown", "energy": "unknown", "rate": "unknown", **bins},
                        "caption": "scripted"}}


# Four scripted answers with known claims and bins:
ANSWERS = [
    # pitch high (agrees), loudness soft (bin high: contradicts), rate fast (bin unknown: unverifiable)
    ("pitch: high; loudness: soft; rate: fast", _row(pitch="high", energy="high")),
    # pitch low, volume normal, slowly: all three agree
    ("The pitch is low, the volume is normal and she speaks slowly.", _row(pitch="low", energy="normal", rate="low")),
    # no claim at all, on a measured clip
    ("<answer>sad</answer>", _row(pitch="low", energy="low", rate="low")),
    # a claim on a clip of a corpus without prosody: counted as a claim, never checked
    ("pitch: high", {"transcript": "no prosody here"}),
]


def _records(answers=ANSWERS) -> list[dict]:
    return [score_answer(text, row) for text, row in answers]


def test_one_answer_lists_its_claims_with_verdicts_and_counts_them():
    first, _, none, unmeasured = _records()
    assert [(c["dimension"], c["level"], c["verdict"]) for c in first["claims"]] == [
        ("pitch", "high", "agrees"), ("energy", "low", "contradicts"), ("rate", "high", "unverifiable")]
    assert (first["agreeing"], first["contradicting"], first["unverifiable"], first["faithfulness"]) == (1, 1, 1, 0.5)
    assert none["measured"] and none["claims"] == [] and none["faithfulness"] is None
    assert not unmeasured["measured"] and unmeasured["agreeing"] is None and unmeasured["faithfulness"] is None
    assert [c["verdict"] for c in unmeasured["claims"]] == [None]


def test_a_sets_scores_by_hand():
    counts = count_answers(_records())
    assert {k: counts[k] for k in ("answers", "claims", "measured", "agreeing", "contradicting", "unverifiable",
                                   "answers_checkable")} == {
        "answers": 4, "claims": 7, "measured": 3, "agreeing": 4, "contradicting": 1, "unverifiable": 1,
        "answers_checkable": 2}
    scores = summarise(counts)
    # micro: 4 agreeing of 5 checkable claims (the per-answer mean would be (1/2 + 1) / 2 = 0.75)
    assert scores == pytest.approx({"faithfulness": 4 / 5, "claim_rate": 2 / 3, "claims_per_answer": 7 / 4})
    assert summarise(counts, faithfulness=False) == {}
    assert summarise(counts, judge=True) == summarise(counts)  # nothing was judged: no judge scores


def test_a_corpus_without_prosody_scores_no_faithfulness_but_still_counts_claims():
    counts = count_answers(_records([("pitch: high; rate: slow", {}), ("<answer>sad</answer>", None)]))
    assert counts["measured"] == 0 and counts["claims"] == 2
    assert summarise(counts) == {"claims_per_answer": 1.0}  # no faithfulness, no claim rate: not 0, not NaN
    # measured clips, but no checkable claim: a claim rate of 0 and no faithfulness
    counts = count_answers(_records([("pitch: high", _row(energy="low")), ("<answer>sad</answer>", _row())]))
    assert summarise(counts) == {"claim_rate": 0.0, "claims_per_answer": 0.5}


def _vector(counts: dict) -> torch.Tensor:
    return torch.tensor([counts[k] for k in sorted(counts)], dtype=torch.float64)


def test_ranks_sum_numerators_and_denominators_before_dividing():
    rank0, rank1 = count_answers(_records(ANSWERS[0::2])), count_answers(_records(ANSWERS[1::2]))
    assert summarise(rank0)["faithfulness"] == 0.5 and summarise(rank1)["faithfulness"] == 1.0
    # the all-reduce of rank 0 adds rank 1's vector (keys in sorted order)
    total = reduce_counts(rank0, lambda vector: vector + _vector(rank1))
    assert total == count_answers(_records())
    assert summarise(total)["faithfulness"] == pytest.approx(0.8)  # not the mean of the ranks' 0.75
    assert reduce_counts(rank0, lambda vector: vector) == rank0  # one process: unchanged


JUDGE_REPLIES = [
    "prosody_alignment: 5\ninterpretation: 3\ncompleteness: 1\nfluency: 4",   # 1, .5, 0, .75
    "**Prosody alignment**: 3/5; Interpretive quality = 5\ncompleteness: 9\nfluency: 2",  # 9: off the scale
    "I cannot grade this.",                                                    # nothing
]


def test_judge_scores_average_per_criterion_over_the_replies_that_have_it(monkeypatch):
    monkeypatch.setattr(Judge, "generate", lambda self, conversations: JUDGE_REPLIES[: len(conversations)])
    judge = Judge(model="unused: generate is scripted")
    grades = judge.score(["a", "b", "c"], [None, _row(pitch="high"), {}])
    records = [{"judge": judge_record(g)} for g in grades]
    assert records[1]["judge"] == {"scores": {"prosody_alignment": 0.5, "interpretation": 1.0, "fluency": 0.25},
                                   "missing": ["completeness"], "parsed": False}
    counts = count_answers(records)
    assert (counts["judged"], counts["judge_unparsable"]) == (3, 2) == (judge.calls, judge.unparsable)
    scores = summarise(counts, faithfulness=False, judge=True)
    assert scores == pytest.approx({
        "judge/prosody_alignment": (1 + 0.5) / 2, "judge/interpretation": (0.5 + 1) / 2,
        "judge/completeness": 0.0,                # one reply graded it, with 1 (the scale's bottom)
        "judge/fluency": (0.75 + 0.25) / 2,
        "judge/mean": (0.75 + 0.75 + 0.0 + 0.5) / 4, "judge_unparsable": 2.0})
    # nothing parsable at all: the unparsable count alone
    only_garbage = count_answers([{"judge": judge_record(parse_judge_output("no"))}])
    assert summarise(only_garbage, faithfulness=False, judge=True) == {"judge_unparsable": 1.0}


def test_the_table_prints_shares_in_percent_and_dashes_for_absent_scores():
    table = format_explanation_table({
        "ravdess": {"faithfulness": 0.8, "claim_rate": 2 / 3, "claims_per_answer": 1.75, "judge/mean": 0.5,
                    "judge_unparsable": 2.0},
        "plain": {"claims_per_answer": 0.5, "judge/mean": 0.25, "judge_unparsable": 0.0}})
    lines = table.splitlines()
    assert lines[0].split() == ["explanations", "faithful", "claimed", "claims/ans", "judge", "unparsable"]
    assert lines[2].split() == ["ravdess", "80.00", "66.67", "1.75", "50.00", "2"]
    assert lines[3].split() == ["plain", "-", "-", "0.50", "25.00", "0"]


def test_bad_options_and_modules_without_answers_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="model"):
        judge_arguments({"dtype": "float32"})
    with pytest.raises(ValueError, match="temprature"):
        judge_arguments({"model": "x", "temprature": 0.5})
    callback = ExplanationEvaluation(judge={"model": str(tmp_path / "nowhere")})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        callback.setup(None, None, "test")
    callback.setup(None, None, "fit")  # the judge is needed by tests only
    batch = {"key": ["a"], "label": torch.tensor([0]), "row": [{}]}
    module = SimpleNamespace(hparams=SimpleNamespace(class_names=["sad"]))
    with pytest.raises(TypeError, match="test_step returns none"):
        ExplanationEvaluation().on_test_batch_end(None, module, None, batch, 0)


@pytest.mark.parametrize("module_path", ["emorl.models.zeroshot.ZeroShotLALM", "emorl.models.sft.SFTLALM",
                                         "emorl.models.grpo.GRPOLALM"])
def test_every_lalm_modules_test_step_returns_its_answers(module_path, models):
    import importlib

    module_name, class_name = module_path.rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    module = cls(class_names=["sad", "happy"], model=str(models[0]), dtype="float32")
    module.answer = lambda batch: (["<answer>happy</answer>", "?"], torch.tensor([1, -1]), None)  # no generation
    module._trainer = SimpleNamespace(datamodule=SimpleNamespace(test_names=["own", "other"]))
    batch = {"key": ["a", "b"], "label": torch.tensor([0, 1]), "row": [{}, {}]}
    assert module.test_step(batch, 0, dataloader_idx=1) == {
        "test_set": "other", "texts": ["<answer>happy</answer>", "?"], "preds": [1, -1]}
    assert module.test_step(None, 1) is None


# -- end to end ----------------------------------------------------------------------------------------
LABELS = ("neutral", "happy", "sad", "angry")
#: the measured set's clips: bins, and the answer the model is made to give
SCRIPTED = {
    "neutral": ({"pitch": "normal", "energy": "normal", "rate": "normal"},
                "<think>pitch: normal; loudness: normal; rate: normal</think><answer>neutral</answer>"),  # 3 agree
    "happy": ({"pitch": "high", "energy": "high", "rate": "high"},
              "<think>a high pitch, but she speaks slowly</think><answer>happy</answer>"),  # 1 agrees, 1 not
    "sad": ({"pitch": "low", "energy": "low", "rate": "unknown"},
            "<think>slow and quiet</think><answer>sad</answer>"),  # quiet agrees, slow unverifiable
    "angry": ({"pitch": "high", "energy": "high", "rate": "normal"}, "<answer>angry</answer>"),  # no claim
}
GOOD_REPLY = "prosody_alignment: 5\ninterpretation: 4\ncompleteness: 2\nfluency: 3"


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain")
    small = dict(labels=LABELS, speakers=("s1", "s2"), per_speaker_label=1, test_speakers=("s2",))
    measured = make_tiny_corpus(root / "measured", name="tiny", **small)
    update_rows(measured, {row["key"]: {"prosody": {"bins": SCRIPTED[row["label"]][0], "caption": "c"}}
                           for row in measured.rows()})
    plain = make_tiny_corpus(root / "plain", name="plain", **small)  # never measured
    return load_prepared_corpus(measured.root), plain


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from emorl.textlm import build_tiny_text_lm
    from tests.lalm_fixtures import tiny_model_dir

    return tiny_model_dir("qwen2-audio"), build_tiny_text_lm(tmp_path_factory.mktemp("judge") / "tiny-judge")


def _script_answers(monkeypatch):
    """The tiny model generates for real; its texts are then replaced by SCRIPTED's (the plain set: by
    one pitch claim) so that every score has a known value."""
    import emorl.models.zeroshot as zeroshot
    from emorl.lalm.answers import label_ids

    real = zeroshot.answer_batch

    def scripted(backbone, prompts, batch, *args, **kwargs):
        texts, _, result = real(backbone, prompts, batch, *args, **kwargs)
        assert len(texts) == len(batch["key"])
        texts = [SCRIPTED[row["label"]][1] if row["dataset"] == "tiny" else "<think>the pitch is high</think>"
                 for row in batch["row"]]
        return texts, label_ids(texts, prompts.class_names, kwargs.get("reading") or prompts.format.reading), result

    monkeypatch.setattr(zeroshot, "answer_batch", scripted)


def _script_judge(monkeypatch):
    """The tiny judge generates for real; its reply to an answer with a <think> block becomes GOOD_REPLY
    (the others keep the random model's reply, which is unparsable)."""
    from emorl.textlm import TextLM

    real = TextLM.generate

    def scripted(self, conversations, *args, **kwargs):
        replies = real(self, conversations, *args, **kwargs)
        return [GOOD_REPLY if "<think>" in conv[-1]["content"] else reply
                for conv, reply in zip(conversations, replies)]

    monkeypatch.setattr(TextLM, "generate", scripted)


def test_emorl_test_scores_explanations_per_test_set_end_to_end(corpora, models, tmp_path, monkeypatch, capsys,
                                                                caplog):
    measured, plain = corpora
    lalm, judge = models
    _script_answers(monkeypatch)
    _script_judge(monkeypatch)
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp_path / "runs"), "name": "explain"}},
                    "callbacks": [{"class_path": "emorl.explanations.ExplanationEvaluation",
                                   "init_args": {"judge": {"model": str(judge), "dtype": "float32",
                                                           "max_new_tokens": 4}}}]},
        "model": {"class_path": "emorl.models.zeroshot.ZeroShotLALM",
                  "init_args": {"model": str(lalm), "prompt_format": "esr", "dtype": "float32",
                                "max_new_tokens": 4}},
        "data": {"data_dir": str(measured.root), "fold": 1, "eval_batch_size": 3, "num_workers": 0,
                 "test_sets": {"plain": {"path": str(plain.root)}}},
    }
    path = tmp_path / "explain.yaml"
    path.write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.WARNING, logger="emorl.explanations"):
        cli = EmorlCLI(args=["test", "--config", str(path)])

    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if "/explain/" in k}
    expected = {
        # tiny (4 clips): 5 agreeing of 6 checkable claims; 3 of 4 answers with a checkable claim; 7 claims
        "test/tiny/explain/faithfulness": 5 / 6, "test/tiny/explain/claim_rate": 3 / 4,
        "test/tiny/explain/claims_per_answer": 7 / 4,
        # plain (4 clips, not measured): claims counted, never checked
        "test/plain/explain/claims_per_answer": 1.0,
    }
    grades = {c: s for c, s in zip(CRITERIA, (1.0, 0.75, 0.25, 0.5))}  # GOOD_REPLY
    for name, unparsable in (("tiny", 1), ("plain", 0)):  # tiny: the angry answer has no <think>
        expected |= {f"test/{name}/explain/judge/{c}": s for c, s in grades.items()}
        expected |= {f"test/{name}/explain/judge/mean": 0.625, f"test/{name}/explain/judge_unparsable": unparsable}
    assert metrics == pytest.approx(expected)
    assert any("test set plain has no prosody bins" in r.getMessage() and "emorl data prosody" in r.getMessage()
               for r in caplog.records)

    printed = capsys.readouterr().out
    ua_table, explain_table = printed.index("test set"), printed.index("explanations")
    assert ua_table < explain_table  # after the UA / WA / F1 table
    rows = {line.split()[0]: line.split() for line in printed[explain_table:].splitlines()[2:4]}
    assert rows["tiny"][1:4] == ["83.33", "75.00", "1.75"] and rows["plain"][1:4] == ["-", "-", "1.00"]

    log_dir = Path(cli.trainer.log_dir)
    lines = [json.loads(line) for line in (log_dir / "explanations" / "tiny.jsonl").read_text().splitlines()]
    by_label = {line["label"]: line for line in lines}
    assert len(lines) == 4 and set(by_label) == set(LABELS)
    happy = by_label["happy"]
    assert happy["prediction"] == "happy" and happy["bins"] == SCRIPTED["happy"][0]
    assert [(c["text"], c["verdict"]) for c in happy["claims"]] == [("high pitch", "agrees"), ("slowly", "contradicts")]
    assert (happy["agreeing"], happy["contradicting"], happy["faithfulness"]) == (1, 1, 0.5)
    assert happy["judge"]["scores"] == grades and by_label["angry"]["judge"]["parsed"] is False
    plain_lines = [json.loads(line) for line in (log_dir / "explanations" / "plain.jsonl").read_text().splitlines()]
    assert len(plain_lines) == 4 and all(p["bins"] is None and p["faithfulness"] is None for p in plain_lines)

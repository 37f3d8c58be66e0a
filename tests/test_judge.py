"""The GRPO-PTR reasoning judge: prompt, parser (well-formed, partial, garbage, odd styles), end to end."""

import pytest

from emorl.rl.judge import RUBRIC, Judge, judge_messages, parse_judge_output
from emorl.textlm import TextLM, build_tiny_text_lm

NAMES = [c.name for c in RUBRIC]
ROW = {
    "key": "a1", "transcript": "Kids are talking by the door.",
    "prosody": {"caption": "pitch: high and rising; loudness: loud; rate: fast",
                "bins": {"pitch": "high", "energy": "high", "rate": "high", "hnr": "unknown"}},
}


def test_rubric_has_the_four_criteria():
    assert NAMES == ["prosody_alignment", "interpretation", "completeness", "fluency"]
    assert all(c.description for c in RUBRIC)


def test_prompt_carries_transcript_prosody_options_answer_and_format():
    system, user = judge_messages("<think>loud</think><answer>angry</answer>", ROW, ["angry", "sad"])
    assert system["role"] == "system" and user["role"] == "user"
    text = user["content"]
    for needle in ("Emotion options: angry, sad", "Transcript: Kids are talking by the door.",
                   "Measured prosody: pitch: high and rising; loudness: loud; rate: fast",
                   "pitch high, energy high, rate high", "<think>loud</think><answer>angry</answer>"):
        assert needle in text
    assert "hnr" not in text  # unknown bins are left out
    assert text.rstrip().endswith("\n".join(f"{n}: <1-5>" for n in NAMES))


def test_prompt_without_row_says_not_available():
    text = judge_messages("x", None)[1]["content"]
    assert "Transcript: (not available)" in text and "Measured prosody: (not measured)" in text
    assert "Emotion options" not in text


def test_well_formed_reply():
    scores = parse_judge_output("prosody_alignment: 5\ninterpretation: 4\ncompleteness: 2\nfluency: 1")
    assert scores.parsed and scores.missing == []
    assert scores.scores == {"prosody_alignment": 1.0, "interpretation": 0.75, "completeness": 0.25, "fluency": 0.0}
    assert scores.mean == pytest.approx(0.5)


def test_partial_reply_scores_missing_criteria_zero():
    scores = parse_judge_output("prosody_alignment: 3\nfluency: 5\nI cannot judge the rest.")
    assert not scores.parsed and scores.missing == ["interpretation", "completeness"]
    assert scores.scores == {"prosody_alignment": 0.5, "interpretation": 0.0, "completeness": 0.0, "fluency": 1.0}
    assert scores.mean == pytest.approx(0.375)


@pytest.mark.parametrize("garbage", [None, "", "the answer is good", "angry angry 4 5 3", "<|im_end|> 12"])
def test_garbage_is_unparsable_and_zero(garbage):
    scores = parse_judge_output(garbage)
    assert not scores.parsed and scores.missing == NAMES and scores.mean == 0.0


def test_styles_decimals_fractions_markdown_case_separators():
    reply = (
        "**Prosody Alignment:** 4/5\n"
        "2. Interpretive quality - 3.5 (good contrast with sad)\n"
        "- COMPLETENESS = 4 out of 5\n"
        "__fluency__ \u2014 score: 2."
    )
    scores = parse_judge_output(reply)
    assert scores.parsed
    assert scores.scores == {"prosody_alignment": 0.75, "interpretation": 0.625, "completeness": 0.75, "fluency": 0.25}


def test_one_line_reply_and_hyphenated_names():
    scores = parse_judge_output("prosody-alignment: 2, interpretation: 2; completeness: 2, fluency 2")
    assert scores.parsed and set(scores.scores.values()) == {0.25}


@pytest.mark.parametrize("line", ["fluency: 0", "fluency: 7", "fluency: 9/10", "fluency: 5.5", "fluency: -1"])
def test_off_scale_scores_are_rejected_not_clipped(line):
    scores = parse_judge_output(f"prosody_alignment: 5\ninterpretation: 5\ncompleteness: 5\n{line}")
    assert scores.missing == ["fluency"] and scores.scores["fluency"] == 0.0
    assert scores.scores["prosody_alignment"] == 1.0


def test_first_valid_line_wins_and_unknown_names_are_ignored():
    scores = parse_judge_output("overall: 5\nfluency: 2\nfluency: 5\nfluency: 8")
    assert scores.scores["fluency"] == 0.25 and "overall" not in scores.scores


@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory):
    return build_tiny_text_lm(tmp_path_factory.mktemp("judge"), hidden_size=32)


def test_tiny_random_judge_is_counted_unparsable_and_scores_zero(tiny_judge_dir):
    judge = Judge(str(tiny_judge_dir), dtype="float32", batch_size=2, max_new_tokens=8)
    assert judge.lm is None  # loaded lazily
    results = judge.score(["<answer>angry</answer>", "<think>calm</think><answer>sad</answer>", "x"], [ROW, None, ROW])
    assert judge.lm is not None and len(results) == 3
    assert judge.calls == 3 and judge.unparsable == 3 and judge.batches == 1
    assert all(r.mean == 0.0 and not r.parsed for r in results)
    assert judge.score([], []) == [] and judge.calls == 3


def test_scripted_judge_scores_exactly(tiny_judge_dir, monkeypatch):
    replies = iter(["prosody_alignment: 5\ninterpretation: 3\ncompleteness: 1\nfluency: 4",
                    "prosody_alignment: 2\nfluency: 2"])
    seen = {}

    def scripted(self, conversations, max_new_tokens, batch_size, temperature, seed=None):
        seen.update(count=len(conversations), temperature=temperature, max_new_tokens=max_new_tokens)
        seen["prompt"] = conversations[0][1]["content"]
        return [next(replies) for _ in conversations]

    monkeypatch.setattr(TextLM, "generate", scripted)
    judge = Judge(str(tiny_judge_dir), dtype="float32", max_new_tokens=40, label_options=["angry", "sad"])
    first, second = judge.score(["<answer>angry</answer>", "<answer>sad</answer>"], [ROW, ROW])
    assert seen == {"count": 2, "temperature": 0.0, "max_new_tokens": 40, "prompt": seen["prompt"]}
    assert "Emotion options: angry, sad" in seen["prompt"]
    assert first.scores == {"prosody_alignment": 1.0, "interpretation": 0.5, "completeness": 0.0, "fluency": 0.75}
    assert first.mean == pytest.approx(0.5625) and first.parsed
    assert second.mean == pytest.approx((0.25 + 0.25) / 4) and second.missing == ["interpretation", "completeness"]
    assert (judge.calls, judge.unparsable) == (2, 1)


def test_bad_arguments_are_clear_errors(tiny_judge_dir, tmp_path):
    with pytest.raises(ValueError, match="answers but"):
        Judge(str(tiny_judge_dir)).score(["a"], [])
    with pytest.raises(ValueError, match="batch_size"):
        Judge(str(tiny_judge_dir), batch_size=0)
    with pytest.raises(FileNotFoundError, match="no causal LM"):
        Judge(str(tmp_path / "nowhere")).score(["a"], [None])

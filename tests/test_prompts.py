"""Prompt formats: each regex accepts exactly its format, and every target it writes parses back."""

import random

import pytest

from emorl.labels import CORPUS_LABELS, parse_answer
from emorl.prompts import (
    ESR_TAGS,
    FORMATS,
    build_messages,
    build_question,
    get_format,
    option_order,
    target_text,
)

ESR_OK = (
    "<think><transcript>I can't believe it</transcript><keywords>can't believe</keywords>"
    "<prosody>high pitch, fast, loud</prosody><synthesis>surprise and delight</synthesis></think>"
    "<answer>happy</answer>"
)


@pytest.mark.parametrize("text", [
    "<answer>happy</answer>",
    "  <answer> happy </answer>\n",
    "<ANSWER>sad</ANSWER>",
])
def test_ir_accepts(text):
    assert FORMATS["ir"].matches(text)


@pytest.mark.parametrize("text", [
    "happy",
    "<answer></answer>",
    "<answer>  </answer>",
    "<answer>happy</answer> because of the pitch",
    "The answer: <answer>happy</answer>",
    "<think>x</think><answer>happy</answer>",
    "<answer>happy</answer><answer>sad</answer>",
    "<answer>happy",
    "",
    None,
])
def test_ir_rejects(text):
    assert not FORMATS["ir"].matches(text)


@pytest.mark.parametrize("text", [
    "<think>rising pitch and laughter</think><answer>happy</answer>",
    "<think>\nline one\nline two\n</think>\n\n<answer>angry</answer>\n",
])
def test_eur_accepts(text):
    assert FORMATS["eur"].matches(text)


@pytest.mark.parametrize("text", [
    "<answer>happy</answer>",
    "<think></think><answer>happy</answer>",
    "<think>a</think>",
    "<think>a <answer>sad</answer></think><answer>happy</answer>",
    "<think>a</think><answer>happy</answer><think>b</think>",
    "so <think>a</think><answer>happy</answer>",
    ESR_OK.replace("<think>", "<think>x</think><think>"),
])
def test_eur_rejects(text):
    assert not FORMATS["eur"].matches(text)


def test_esr_accepts_the_structured_form_and_whitespace_between_blocks():
    assert FORMATS["esr"].matches(ESR_OK)
    spaced = ESR_OK.replace("><", ">\n  <")
    assert FORMATS["esr"].matches(spaced)
    assert FORMATS["esr"].answer_span(spaced) == "happy"


@pytest.mark.parametrize("broken", [
    ESR_OK.replace("<keywords>can't believe</keywords>", ""),                       # a tag missing
    ESR_OK.replace("<keywords>can't believe</keywords>", "<keywords></keywords>"),  # an empty tag
    ESR_OK.replace("<transcript>I can't believe it</transcript><keywords>can't believe</keywords>",
                   "<keywords>can't believe</keywords><transcript>I can't believe it</transcript>"),  # order
    ESR_OK.replace("</think>", "extra words</think>"),                              # text outside the tags
    ESR_OK + " done",
    "<think>free reasoning</think><answer>happy</answer>",                         # EUR is not ESR
])
def test_esr_rejects(broken):
    assert not FORMATS["esr"].matches(broken)


def test_esr_text_is_also_valid_eur_but_not_ir():
    """ESR answers are EUR answers whose think block is structured; IR forbids reasoning."""
    assert FORMATS["eur"].matches(ESR_OK)
    assert not FORMATS["ir"].matches(ESR_OK)


def test_zero_shot_formats_accept_any_text_but_empty():
    for name in ("direct", "cot"):
        assert FORMATS[name].matches("I think the speaker sounds sad.")
        assert not FORMATS[name].matches("   ")


@pytest.mark.parametrize("corpus", sorted(CORPUS_LABELS))
@pytest.mark.parametrize("name", ["ir", "eur", "esr"])
def test_targets_match_their_format_and_parse_back(corpus, name):
    structured = {tag: f"some {tag}" for tag in ESR_TAGS}
    for label in CORPUS_LABELS[corpus].classes:
        text = target_text(name, label, rationale="calm voice, low pitch", structured=structured)
        assert FORMATS[name].matches(text), text
        assert parse_answer(text, CORPUS_LABELS[corpus].classes) == label


def test_targets_need_their_reasoning():
    with pytest.raises(ValueError, match="rationale"):
        target_text("eur", "happy")
    with pytest.raises(ValueError, match="prosody"):
        target_text("esr", "happy", structured={"transcript": "a", "keywords": "b", "synthesis": "d"})


def test_question_lists_every_option_once_and_asks_for_the_format():
    options = list(CORPUS_LABELS["meld"].classes)
    text = build_question("esr", options)
    assert text.index("neutral") < text.index("angry")  # label-set order by default
    for option in options:
        assert text.count(f" {option},") + text.count(f" {option}.") == 1
    for tag in ESR_TAGS:
        assert f"<{tag}>" in text


def test_shuffled_options_are_a_seeded_permutation():
    options = list(CORPUS_LABELS["ravdess"].classes)
    first = option_order(options, shuffle=True, rng=random.Random(3))
    again = option_order(options, shuffle=True, rng=random.Random(3))
    other = option_order(options, shuffle=True, rng=random.Random(4))
    assert first == again and sorted(first) == sorted(options)
    assert first != options or other != options
    orders = {tuple(option_order(options, True, random.Random(seed))) for seed in range(20)}
    assert len(orders) > 10


def test_messages_put_the_audio_before_the_question():
    messages = build_messages("Which emotion?", system_prompt="Be brief.")
    assert [m["role"] for m in messages] == ["system", "user"]
    kinds = [item["type"] for item in messages[1]["content"]]
    assert kinds == ["audio", "text"]
    assert [m["role"] for m in build_messages("q", system_prompt=None)] == ["user"]


def test_unknown_format_and_empty_options_are_clear_errors():
    with pytest.raises(ValueError, match="choose one of"):
        get_format("xml")
    with pytest.raises(ValueError, match="at least one"):
        build_question("ir", [])

import json

import pytest

from emorl.labels import (
    CORPUS_LABELS,
    LabelSet,
    UnknownLabelError,
    canonical_label,
    get_label_set,
    is_known_emotion,
    parse_answer,
)

MELD = CORPUS_LABELS["meld"].classes
IEMOCAP = CORPUS_LABELS["iemocap"].classes


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Joy", "happy"),
        (" happiness ", "happy"),
        ("anger", "angry"),
        ("SADNESS", "sad"),
        ("fearful", "fear"),
        ("Surprised", "surprise"),
        ("disgusted", "disgust"),
        ("neutral", "neutral"),
        ("Boredom", "boredom"),  # unknown names pass through, lower-cased
    ],
)
def test_canonical_label(name, expected):
    assert canonical_label(name) == expected


def test_is_known_emotion():
    assert is_known_emotion("joy") and is_known_emotion("calm")
    assert not is_known_emotion("boredom")


@pytest.mark.shared_data
@pytest.mark.parametrize("corpus", ["iemocap", "meld", "ravdess", "savee"])
def test_label_sets_match_emobox(shared_data_dir, corpus):
    """Raw-label maps and class order equal EmoBox's label_map.json."""
    label_map = json.loads((shared_data_dir / "emobox" / corpus / "label_map.json").read_text())
    built = LabelSet.from_emobox_map(corpus, label_map)
    assert built.classes == CORPUS_LABELS[corpus].classes
    assert dict(built.raw_map) == dict(CORPUS_LABELS[corpus].raw_map)


def test_class_counts_and_merges():
    assert len(CORPUS_LABELS["iemocap"]) == 4
    assert len(CORPUS_LABELS["meld"]) == 7
    assert len(CORPUS_LABELS["ravdess"]) == 8
    assert len(CORPUS_LABELS["savee"]) == 7
    assert CORPUS_LABELS["iemocap"].from_raw("exc") == "happy"
    assert CORPUS_LABELS["iemocap"].from_raw("hap") == "happy"


def test_unknown_raw_label_is_named():
    with pytest.raises(UnknownLabelError, match="'fru'.*iemocap"):
        CORPUS_LABELS["iemocap"].from_raw("fru")
    with pytest.raises(UnknownLabelError, match="'calm'"):
        CORPUS_LABELS["meld"].index("calm")
    with pytest.raises(UnknownLabelError, match="no built-in label set"):
        get_label_set("emodb")


def test_label_set_rejects_inconsistent_definitions():
    with pytest.raises(ValueError, match="repeats"):
        LabelSet("x", ("a", "a"))
    with pytest.raises(ValueError, match="unknown classes"):
        LabelSet("x", ("a",), {"r": "b"})


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer>joy</answer>", "happy"),
        ("<answer> Joy. </answer>", "happy"),
        ("<ANSWER>  ANGER!  </ANSWER>", "angry"),
        ("<think>It could be angry.</think><answer>sadness</answer>", "sad"),
        ("<answer>neutral</answer> trailing text mentioning fear", "neutral"),
        ("I think the speaker sounds surprised.", "surprise"),
        ("The emotion is: sadness, not anger", "sad"),
        ("Answer: **Fear** rather than surprise", "fear"),
        ("The speaker is clearly unhappy", "sad"),
        ("neutral", "neutral"),
        ("<answer>(D) disgust</answer>", "disgust"),
    ],
)
def test_parse_answer_finds_the_label(text, expected):
    assert parse_answer(text, MELD) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        "I cannot tell from this clip.",
        "not angry, rather sad",  # two labels, no cue: ambiguous
        "<answer></answer>",
        "<answer>calm</answer>",  # calm is not a MELD class
        "the speaker is madame curie",  # 'mad' inside another word does not count
        "happyish vibes",
    ],
)
def test_parse_answer_returns_none_when_nothing_usable(text):
    assert parse_answer(text, MELD) is None


def test_parse_answer_respects_the_label_set():
    assert parse_answer("<answer>surprise</answer>", IEMOCAP) is None
    assert parse_answer("<answer>surprise</answer>", MELD) == "surprise"
    # a synonym maps only onto classes of the set
    assert parse_answer("she sounds joyful", IEMOCAP) == "happy"


def test_parse_answer_last_answer_block_wins():
    assert parse_answer("<answer>angry</answer> wait <answer>sad</answer>", MELD) == "sad"

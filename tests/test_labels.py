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


# -- the strict reading (tagged formats) against the lenient one (untagged zero-shot prompts) ------
@pytest.mark.parametrize(
    "text, strict, lenient",
    [
        ("<answer>sad</answer>", "sad", "sad"),
        ("<think>bright, fast</think><answer> Joy (happy) </answer>", "happy", "happy"),  # one option, two words
        ("<answer>angry</answer> wait <answer>sad</answer>", "sad", "sad"),             # the last block
        ("<answer>sad or angry</answer>", None, "sad"),                                 # two options
        ("<answer>(D) disgust, maybe fear</answer>", None, "disgust"),
        ("<think>she sounds angry</think><answer>not sure</answer>", None, "angry"),    # no option in the block
        ("<answer>bored</answer> so happy", None, "happy"),
        ("the speaker sounds sad", None, "sad"),                                        # no block
        ("banana tree fear lamp window", None, "fear"),                                 # random words
        ("<answer>happy", None, "happy"),                                               # unclosed
        ("", None, None),
    ],
)
def test_strict_reading_takes_one_option_from_the_answer_block_only(text, strict, lenient):
    assert parse_answer(text, MELD, reading="strict") == strict
    assert parse_answer(text, MELD, reading="lenient") == lenient
    assert parse_answer(text, MELD) == lenient  # the default: today's reading, for free-text callers


def test_random_words_naming_an_emotion_parse_only_when_lenient():
    """Issue 14: answers of random words with an emotion name somewhere parsed 100 % of the time."""
    import random

    rng = random.Random(0)
    words = ["the", "voice", "tree", "blue", "runs", "seven", "window", "lamp"]
    texts = [" ".join(rng.sample(words, 4) + [rng.choice(MELD)] + rng.sample(words, 3)) for _ in range(200)]
    assert all(parse_answer(t, MELD, reading="lenient") is not None for t in texts)
    assert all(parse_answer(t, MELD, reading="strict") is None for t in texts)


def test_unknown_reading_is_an_error():
    with pytest.raises(ValueError, match="reading"):
        parse_answer("<answer>sad</answer>", MELD, reading="loose")

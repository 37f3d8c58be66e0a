"""The emotion wheel, ESWR, BCR, format rewards and the alpha schedule, against hand computations."""

import math

import pytest
import torch

from emorl.labels import CORPUS_LABELS
from emorl.rl.rewards import RewardContext, RewardSet, eswr, predicted_label
from emorl.rl.schedule import alpha_at
from emorl.rl.wheel import DEFAULT_ANGLES, angle_similarity, similarity, similarity_matrix

# Plutchik's wheel as printed in EMO-RL / Plutchik (1982), written out independently of emorl.
WHEEL_DEGREES = {"happy": 0, "fear": 90, "surprise": 135, "sad": 180, "disgust": 225, "angry": 270}


def paper_s(a: str, b: str) -> float:
    """EMO-RL eq. 7 with S(i, i) = 1 (REFERENCE.md)."""
    if a == b:
        return 1.0
    if "neutral" in (a, b):
        return 0.5
    return 0.5 * (math.cos(math.radians(WHEEL_DEGREES[a] - WHEEL_DEGREES[b])) + 1)


def paper_eswr(pred: str, true: str, alpha: float, gamma: float = 0.7) -> float:
    s = paper_s(pred, true)
    return 1.0 if s == 1 else (alpha * s if s > gamma else 0.0)


def test_angle_similarity_at_the_landmarks():
    assert angle_similarity(0) == pytest.approx(1.0)
    assert angle_similarity(45) == pytest.approx(0.8535534)
    assert angle_similarity(90) == pytest.approx(0.5)
    assert angle_similarity(135) == pytest.approx(0.1464466)
    assert angle_similarity(180) == pytest.approx(0.0, abs=1e-12)
    assert angle_similarity(-90) == pytest.approx(angle_similarity(270))


@pytest.mark.parametrize("alpha", [1.0, 0.6, 0.0])
def test_eswr_equals_the_paper_on_every_pair_of_meld_labels(alpha):
    labels = CORPUS_LABELS["meld"].classes
    assert len(labels) == 7
    for true in labels:
        for pred in labels:
            assert eswr(pred, true, alpha) == pytest.approx(paper_eswr(pred, true, alpha)), (pred, true)


def test_with_gamma_07_only_neighbours_on_the_wheel_earn_partial_credit():
    """45 degrees apart (S = 0.854 > 0.7): anger-disgust, disgust-sadness, sadness-surprise, surprise-fear."""
    labels = CORPUS_LABELS["meld"].classes
    partial = {(p, t) for p in labels for t in labels if 0 < eswr(p, t, alpha=1.0) < 1}
    neighbours = {("angry", "disgust"), ("disgust", "sad"), ("sad", "surprise"), ("surprise", "fear")}
    assert partial == neighbours | {(b, a) for a, b in neighbours}
    assert eswr("surprise", "fear", alpha=0.5) == pytest.approx(0.5 * 0.8535534)


def test_similarity_matrix_is_symmetric_with_unit_diagonal_and_neutral_halves():
    labels = ["neutral", "happy", "sad", "angry", "fear", "disgust", "surprise", "calm", "frustrated",
              "excited", "contempt", "other"]
    s = similarity_matrix(labels)
    assert torch.allclose(s, s.T)
    assert torch.all(s.diagonal() == 1)
    assert torch.all(s[0, 1:] == 0.5)
    assert s[labels.index("other"), labels.index("happy")] == 0
    assert s[labels.index("calm"), labels.index("happy")] == pytest.approx(angle_similarity(22.5))
    assert s[labels.index("contempt"), labels.index("angry")] == pytest.approx(angle_similarity(22.5))


def test_wheel_choices_are_overridable_and_unknown_labels_are_errors():
    assert similarity("calm", "happy", angles={**DEFAULT_ANGLES, "calm": 180.0}) == pytest.approx(0.0, abs=1e-12)
    assert similarity("happy", "angry", neutral_similarity=0.2) == pytest.approx(0.5)
    assert similarity("neutral", "angry", neutral_similarity=0.2) == 0.2
    with pytest.raises(KeyError, match="boredom"):
        similarity("boredom", "happy")


@pytest.mark.parametrize("text, label", [
    ("<answer>happy</answer>", "happy"),
    ("<think>bright voice</think><answer> Joy </answer>", "happy"),
    ("<answer>sad</answer> then <answer>angry</answer>", "angry"),  # the last block counts
    ("the speaker is happy", None),                                   # no block: nothing (strict)
    ("<answer>bored</answer>", None),
    ("<answer>sad or angry</answer>", None),                          # two options: unparsed, as in evaluation
    ("<think>angry voice</think><answer>unsure</answer>", None),      # the think text does not count
    ("<answer>happy", None),
    ("", None),
])
def test_predicted_label_reads_the_last_answer_block(text, label):
    assert predicted_label(text, CORPUS_LABELS["meld"].classes) == label


def test_the_accuracy_reward_reads_answers_as_evaluation_does():
    """One parser: predicted_label is parse_answer's strict reading (and lenient when asked)."""
    from emorl.labels import parse_answer

    classes = CORPUS_LABELS["meld"].classes
    for text in ["<answer>sad or angry</answer>", "<answer>Joy</answer>", "fear", "<answer>x</answer> sad"]:
        assert predicted_label(text, classes) == parse_answer(text, classes, reading="strict")
        assert predicted_label(text, classes, strict=False) == parse_answer(text, classes, reading="lenient")
    rewards = RewardSet.from_config(["bcr", "eswr"])
    _, parts = rewards(["<answer>sad or angry</answer>"], ["sad"], RewardContext(classes=classes))
    assert parts["bcr"].tolist() == [0.0] and parts["eswr"].tolist() == [0.0]


def test_lenient_parsing_reads_free_text():
    assert predicted_label("the speaker is happy", CORPUS_LABELS["meld"].classes, strict=False) == "happy"


def test_reward_set_weights_and_components():
    answers = [
        "<think><transcript>a</transcript><keywords>b</keywords><prosody>c</prosody><synthesis>d</synthesis>"
        "</think><answer>fear</answer>",
        "<answer>fear</answer>",
        "fear",
        "<think>x</think><answer>angry</answer>",
    ]
    labels = ["fear", "surprise", "fear", "happy"]
    context = RewardContext(classes=CORPUS_LABELS["meld"].classes, alpha=0.5)
    rewards = RewardSet.from_config([{"name": "format_esr", "weight": 0.5}, "eswr"])
    total, parts = rewards(answers, labels, context)
    assert parts["format_esr"].tolist() == [1, 0, 0, 0]
    assert parts["eswr"].tolist() == pytest.approx([1.0, 0.5 * 0.8535534, 0.0, 0.0])
    assert total.tolist() == pytest.approx([1.5, 0.5 * 0.8535534, 0.0, 0.0])
    bcr, _ = RewardSet.from_config(["bcr", "format_ir"])(answers, labels, context)
    assert bcr.tolist() == [1.0, 0.0, 0.0, 0.0]  # answer 2 is IR-shaped but wrong: no IR format reward


@pytest.mark.parametrize("answer,label,ir,syntax", [
    ("<answer>fear</answer>", "fear", 1.0, 1.0),
    ("<answer> joy </answer>", "happy", 1.0, 1.0),  # a synonym of the true label
    ("<answer>fear</answer>", "surprise", 0.0, 1.0),  # well delimited, wrong
    ("The answer: <answer>fear</answer>", "fear", 0.0, 0.0),  # right, with text outside the tags
    ("<answer>fear", "fear", 0.0, 0.0),
    ("<answer>no idea</answer>", "fear", 0.0, 1.0),
])
def test_the_ir_format_reward_needs_a_correct_well_delimited_answer(answer, label, ir, syntax):
    """EMO-RL 3.3.1: for IR the reward is granted only when the final answer is both correct and
    correctly delimited by <answer> tags; ``format_ir_syntax`` checks the delimiting alone."""
    context = RewardContext(classes=CORPUS_LABELS["meld"].classes)
    _, parts = RewardSet.from_config(["format_ir", "format_ir_syntax"])([answer], [label], context)
    assert (parts["format_ir"].item(), parts["format_ir_syntax"].item()) == (ir, syntax)


def test_reward_config_errors_are_clear():
    with pytest.raises(ValueError, match="unknown reward"):
        RewardSet.from_config(["accuracy"])
    with pytest.raises(ValueError, match="empty"):
        RewardSet.from_config([])
    with pytest.raises(ValueError, match="twice"):
        RewardSet.from_config(["bcr", "bcr"])
    with pytest.raises(ValueError, match="unknown keys"):
        RewardSet.from_config([{"name": "bcr", "wieght": 2}])
    with pytest.raises(ValueError, match="2 answers but 1 labels"):
        RewardSet.from_config(["bcr"])(["a", "b"], ["happy"], RewardContext(classes=["happy"]))


def test_alpha_schedules():
    assert [alpha_at(s, 5) for s in range(6)] == pytest.approx([1, 0.75, 0.5, 0.25, 0, 0])
    assert alpha_at(2, 5, "cosine") == pytest.approx(0.5)
    assert alpha_at(1, 5, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)
    assert alpha_at(3, 5, "constant", start=0.8) == 0.8
    assert alpha_at(0, 1) == 1.0
    with pytest.raises(ValueError, match="linear, cosine or constant"):
        alpha_at(0, 5, "step")

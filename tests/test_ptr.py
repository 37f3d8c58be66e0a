"""GRPO-PTR's pure parts against hand computations: trust weight, the progressive switch, the total."""

import math

import pytest
import torch

from emorl.rl.ptr import (
    PTRConfig,
    ProgressiveSwitch,
    group_trust_weights,
    reasoning_term,
    total_reward,
    trust_weight,
)


def test_trust_weight_is_one_when_correct_answers_reason_at_least_as_well():
    assert trust_weight([0.8, 0.6, 0.2, 0.4], [True, True, False, False]) == 1.0
    assert trust_weight([0.5, 0.5], [True, False]) == 1.0  # equal means: >= holds


def test_trust_weight_is_exp_of_the_gap_otherwise():
    # correct mean (0.2 + 0.4) / 2 = 0.3, wrong mean (0.9 + 0.7 + 0.8) / 3 = 0.8 -> exp(-0.5)
    tau = trust_weight([0.2, 0.9, 0.4, 0.7, 0.8], [True, False, True, False, False])
    assert tau == pytest.approx(math.exp(-0.5)) and tau == pytest.approx(0.6065306597)


@pytest.mark.parametrize("correct", [[True, True, True], [False, False, False]])
def test_trust_weight_without_one_side_is_one(correct):
    assert trust_weight([0.1, 0.9, 0.3], correct) == 1.0


def test_trust_weight_checks_lengths():
    with pytest.raises(ValueError, match="correctness"):
        trust_weight([0.1, 0.2], [True])


def test_group_trust_weights_per_prompt():
    reasoning = torch.tensor([1.0, 0.0, 0.25, 0.75, 0.5, 0.5])
    correct = torch.tensor([False, True, True, False, True, True])
    tau = group_trust_weights(reasoning, correct, group_size=2)
    assert tau.tolist() == pytest.approx([math.exp(-1.0), math.exp(-0.5), 1.0])
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_trust_weights(reasoning, correct, group_size=4)


def test_total_reward_by_hand():
    fmt = torch.tensor([1.0, 1.0, 0.0, 1.0])
    outcome = torch.tensor([1.0, 0.0, 0.0, 1.0])
    reasoning = torch.tensor([0.5, 1.0, 0.25, 0.75])
    tau = torch.tensor([0.5, 1.0])  # per group of 2
    on = total_reward(fmt, outcome, reasoning, tau, on=True, w_format=0.3, w_outcome=1.0, w_reason=0.5)
    # 0.3*1 + 1 + 0.5*0.5*0.5 = 1.425 ; 0.3 + 0 + 0.5*0.5*1 = 0.55 ; 0 + 0 + 0.5*1*0.25 = 0.125 ;
    # 0.3 + 1 + 0.5*1*0.75 = 1.675
    assert on.tolist() == pytest.approx([1.425, 0.55, 0.125, 1.675])
    off = total_reward(fmt, outcome, reasoning, tau, on=False, w_format=0.3, w_outcome=1.0, w_reason=0.5)
    assert off.tolist() == pytest.approx([1.3, 0.3, 0.0, 1.3])
    per_answer = reasoning_term(reasoning, torch.tensor([0.5, 0.5, 1.0, 1.0]), True, 0.5)
    assert per_answer.tolist() == pytest.approx([0.125, 0.25, 0.125, 0.375])
    with pytest.raises(ValueError, match="do not divide"):
        reasoning_term(reasoning, torch.ones(3), True, 0.5)


def test_switch_waits_for_a_full_window_then_turns_on_at_the_threshold():
    switch = ProgressiveSwitch(threshold=0.5, window=3)
    assert switch.running_accuracy is None and not switch.on
    assert not switch.update(8, 8)        # window not full yet, even at 100 %
    assert not switch.update(0, 8)
    assert not switch.update(3, 8)        # (8 + 0 + 3) / 24 = 0.458 < 0.5
    assert switch.running_accuracy == pytest.approx(11 / 24)
    assert not switch.update(5, 8)        # the window drops the first 8: (0 + 3 + 5) / 24 = 0.333
    assert switch.running_accuracy == pytest.approx(8 / 24)
    assert switch.update(4, 8)            # (3 + 5 + 4) / 24 = 0.5 >= 0.5
    assert switch.switched_on_at == 5


def test_switch_running_accuracy_is_answer_weighted_over_the_last_window():
    switch = ProgressiveSwitch(threshold=0.5, window=2)
    switch.update(1, 4)
    switch.update(6, 8)                   # (1 + 6) / 12 = 0.583 -> on
    assert switch.on and switch.switched_on_at == 2
    assert switch.running_accuracy == pytest.approx(7 / 12)
    switch.update(0, 8)                   # (6 + 0) / 16 = 0.375: latched, stays on
    assert switch.on and switch.running_accuracy == pytest.approx(0.375)


def test_switch_without_latch_turns_off_again():
    switch = ProgressiveSwitch(threshold=0.5, window=1, latch=False)
    assert switch.update(3, 4) and not switch.update(1, 4) and switch.update(2, 4)  # 2/4 >= 0.5


def test_threshold_zero_turns_on_after_the_first_full_window():
    switch = ProgressiveSwitch(threshold=0.0, window=2)
    assert not switch.update(0, 4) and switch.update(0, 4)


def test_switch_state_round_trips():
    switch = ProgressiveSwitch(threshold=0.25, window=3)
    for counts in [(1, 4), (2, 4), (0, 4), (3, 4)]:
        switch.update(*counts)
    state = switch.state_dict()
    restored = ProgressiveSwitch(threshold=0.25, window=3)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    assert restored.on and restored.running_accuracy == pytest.approx(5 / 12)
    assert restored.update(4, 4) == switch.update(4, 4) and restored.running_accuracy == switch.running_accuracy


def test_switch_rejects_bad_counts_and_windows():
    with pytest.raises(ValueError, match="window"):
        ProgressiveSwitch(0.5, 0)
    with pytest.raises(ValueError, match="bad counts"):
        ProgressiveSwitch(0.5, 2).update(5, 4)


def test_config_defaults_are_the_published_settings_and_bad_keys_are_errors():
    config = PTRConfig.from_dict({})
    assert (config.w_format, config.w_outcome, config.w_reason, config.accuracy_threshold) == (0.3, 1.0, 0.5, 0.5)
    assert config.reward_list() == [{"name": "format_eur", "weight": 0.3}, {"name": "bcr", "weight": 1.0}]
    with pytest.raises(ValueError, match="unknown key"):
        PTRConfig.from_dict({"w_reasoning": 1.0})
    with pytest.raises(ValueError, match="unknown reward"):
        PTRConfig.from_dict({"outcome": "accuracy"})
    with pytest.raises(ValueError, match="threshold"):
        PTRConfig.from_dict({"accuracy_threshold": 50})

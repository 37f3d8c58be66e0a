"""Group advantages and the GRPO loss against hand computations and analytic gradients."""

import math

import pytest
import torch

from emorl.rl.advantages import group_advantages
from emorl.rl.loss import grpo_loss, kl_k3


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    adv, zero = group_advantages(rewards, group_size=4)
    std = math.sqrt(sum((r - 0.5) ** 2 for r in [1, 0, 0, 1]) / 3)  # unbiased
    expected = [(r - 0.5) / (std + 1e-4) for r in [1, 0, 0, 1]] + [0.0] * 4
    assert adv.tolist() == pytest.approx(expected)
    assert zero.tolist() == [False, True]


def test_zero_std_groups_give_exact_zeros_never_nan():
    rewards = torch.tensor([0.3] * 6 + [0.1, 0.7, 0.2, 0.3, 0.3, 0.3])
    for scale in ("group", "batch", "none"):
        adv, zero = group_advantages(rewards, 6, scale=scale)
        assert torch.all(adv[:6] == 0) and not torch.isnan(adv).any()
        assert zero.tolist() == [True, False]
    adv, _ = group_advantages(torch.tensor([1.0, 2.0]), 1)
    assert adv.tolist() == [0.0, 0.0]


def test_batch_and_no_scaling():
    rewards = torch.tensor([1.0, 0.0, 3.0, 1.0])
    batch, _ = group_advantages(rewards, 2, scale="batch")
    std = rewards.std().item()
    assert batch.tolist() == pytest.approx([0.5 / (std + 1e-4), -0.5 / (std + 1e-4), 1 / (std + 1e-4), -1 / (std + 1e-4)])
    none, _ = group_advantages(rewards, 2, scale="none")
    assert none.tolist() == [0.5, -0.5, 1.0, -1.0]
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(torch.ones(5), 2)


def _case(seed=0):
    g = torch.Generator().manual_seed(seed)
    logps = (-torch.rand(3, 5, generator=g) * 3).requires_grad_()
    old = logps.detach() + torch.randn(3, 5, generator=g) * 0.3
    ref = logps.detach() + torch.randn(3, 5, generator=g) * 0.3
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.float32)
    adv = torch.tensor([1.5, -0.7, 0.4])
    return logps, old, ref, mask, adv


def _hand_token_losses(logps, old, ref, adv, beta, eps_low, eps_high):
    """Per-token losses with Python floats, one token at a time."""
    logps = logps.detach()
    out = []
    for i in range(logps.shape[0]):
        row = []
        for t in range(logps.shape[1]):
            lp, o, r = float(logps[i, t]), float(old[i, t]), float(ref[i, t])
            ratio = math.exp(lp - o)
            a = float(adv[i])
            clipped = min(max(ratio, 1 - eps_low), 1 + eps_high)
            loss = -min(ratio * a, clipped * a)
            d = r - lp
            row.append(loss + beta * (math.exp(d) - d - 1))
        out.append(row)
    return out


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_each_normalisation_equals_the_hand_computation(loss_type):
    logps, old, ref, mask, adv = _case()
    beta, eps_low, eps_high = 0.04, 0.2, 0.28
    tok = _hand_token_losses(logps, old, ref, adv, beta, eps_low, eps_high)
    m = mask.tolist()
    sums = [sum(t * k for t, k in zip(tok[i], m[i])) for i in range(3)]
    counts = [sum(row) for row in m]
    expected = {
        "grpo": sum(s / c for s, c in zip(sums, counts)) / 3,
        "bnpo": sum(sums) / sum(counts),
        "dr_grpo": sum(sums) / (3 * 7),
        "dapo": sum(sums) / (40 / 4),  # 40 active tokens over 4 ranks
    }[loss_type]
    loss, stats = grpo_loss(
        logps, old, adv, mask, ref_logps=ref, beta=beta, epsilon=eps_low, epsilon_high=eps_high,
        loss_type=loss_type, max_completion_length=7, global_active_tokens=40, world_size=4,
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    lp = logps.detach()
    kl = [math.exp(float(ref[i, t] - lp[i, t])) - float(ref[i, t] - lp[i, t]) - 1
          for i in range(3) for t in range(5) if m[i][t]]
    assert stats["kl"].item() == pytest.approx(sum(kl) / len(kl), rel=1e-5)


def test_gradient_at_ratio_one_is_minus_advantage_over_length():
    """With old = current (one update per batch), d loss / d logp[i, t] = -A_i / (B * |o_i|) for grpo."""
    logps, _, _, mask, adv = _case(1)
    loss, stats = grpo_loss(logps, logps.detach(), adv, mask, loss_type="grpo")
    loss.backward()
    lengths = mask.sum(1, keepdim=True)
    expected = -adv[:, None] / (3 * lengths) * mask
    assert torch.allclose(logps.grad, expected, atol=1e-7)
    assert stats["ratio"].item() == pytest.approx(1.0)
    assert stats["clip_fraction"].item() == 0.0


def test_clipping_stops_the_gradient_outside_the_trust_region():
    logps = torch.zeros(2, 1, requires_grad=True)
    old = torch.log(torch.tensor([[1 / 1.5], [1 / 0.5]]))  # ratios 1.5 and 0.5
    adv = torch.tensor([1.0, -1.0])
    loss, stats = grpo_loss(logps, old, adv, torch.ones(2, 1), epsilon=0.2, loss_type="bnpo")
    loss.backward()
    assert torch.all(logps.grad == 0)  # both clipped on the side that matters
    assert stats["clip_high"].item() == 0.5 and stats["clip_low"].item() == 0.5
    assert stats["clip_fraction"].item() == 1.0


def test_k3_is_nonnegative_and_zero_at_equality():
    a, b = torch.randn(100), torch.randn(100)
    assert torch.all(kl_k3(a, b) >= 0)
    assert torch.all(kl_k3(a, a) == 0)


def test_loss_argument_errors():
    logps, old, ref, mask, adv = _case()
    with pytest.raises(ValueError, match="ref_logps"):
        grpo_loss(logps, old, adv, mask, beta=0.1)
    with pytest.raises(ValueError, match="max_completion_length"):
        grpo_loss(logps, old, adv, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logps, old, adv, mask, loss_type="ppo")

"""The vocabulary projection of completion scoring, chunked over answers, against torch's full log-softmax."""

from types import SimpleNamespace

import pytest
import torch

from emorl.lalm.scoring import token_scores


def _backbone(hidden_size=6, vocab=11):
    torch.manual_seed(0)
    return SimpleNamespace(hf_model=SimpleNamespace(lm_head=torch.nn.Linear(hidden_size, vocab, bias=False)))


@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 5, 8])
def test_chunked_scores_equal_the_full_log_softmax(chunk_rows):
    backbone = _backbone()
    hidden = torch.randn(5, 7, 6, requires_grad=True)
    ids = torch.randint(0, 11, (5, 7))
    mask = torch.ones(5, 7, dtype=torch.long)
    mask[1, 4:] = 0
    mask[3, 1:] = 0
    logp, entropy = token_scores(backbone, hidden, ids, mask, temperature=0.7, with_entropy=True,
                                 chunk_rows=chunk_rows)
    logits = backbone.hf_model.lm_head(hidden).float() / 0.7
    full = torch.log_softmax(logits, -1)
    expected = full.gather(-1, ids[..., None])[..., 0] * mask
    torch.testing.assert_close(logp, expected, rtol=0, atol=1e-6)
    p = torch.softmax(logits, -1)
    torch.testing.assert_close(entropy, -(p * p.log()).sum(-1) * mask, rtol=0, atol=1e-5)
    assert torch.all(logp[mask == 0] == 0) and not entropy.requires_grad
    # the gradient reaches every unmasked position's hidden state, and equals the full computation's
    (grad,) = torch.autograd.grad(logp.sum(), hidden)
    (expected_grad,) = torch.autograd.grad(expected.sum(), hidden)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-6)
    assert torch.all(grad[3, 1:] == 0) and grad[3, 0].abs().sum() > 0


def test_no_entropy_unless_asked():
    backbone = _backbone()
    logp, entropy = token_scores(backbone, torch.randn(2, 3, 6), torch.zeros(2, 3, dtype=torch.long),
                                 torch.ones(2, 3, dtype=torch.long))
    assert entropy is None and logp.shape == (2, 3)

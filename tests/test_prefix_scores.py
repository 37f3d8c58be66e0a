"""Completions scored with each prompt computed once equal full-sequence scoring (values and gradients)."""

from __future__ import annotations

import pytest
import torch

from emorl.lalm import build_prompts, embed_prompts, load_backbone
from emorl.lalm.scoring import completion_scores, shared_prompt_scores
from tests.lalm_fixtures import FAMILIES, clips, messages, tiny_model_dir

LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def _setup(family: str, checkpointing: bool):
    torch.manual_seed(0)
    backbone = load_backbone(tiny_model_dir(family), dtype="float32", lora=LORA,
                             gradient_checkpointing=checkpointing)
    with torch.no_grad():  # LoRA B starts at zero: make the adapter matter
        for name, param in backbone.trainable_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    backbone.hf_model.train()
    batch = build_prompts(backbone, messages(2), clips((1.0, 0.4)))  # different lengths: left padding
    with torch.no_grad():
        prompt = embed_prompts(backbone, batch)
    g, length = 3, 7
    ids = torch.randint(0, 200, (2 * g, length))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0
    mask[4, 2:] = 0
    return backbone, prompt, ids, mask, torch.arange(2).repeat_interleave(g)


def _full_sequences(backbone, *args, **kwargs):
    return completion_scores(backbone, *args, share_prompts=False, **kwargs)


def _scores_and_grads(backbone, fn, *args):
    backbone.hf_model.zero_grad(set_to_none=True)
    logp, entropy = fn(backbone, *args, temperature=0.9, with_entropy=True)
    (logp.sum() + (logp * torch.linspace(0, 1, logp.shape[1])).sum()).backward()
    grads = {n: p.grad.detach().clone() for n, p in backbone.trainable_parameters()}
    return logp.detach(), entropy, grads


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("checkpointing", [False, True])
def test_shared_prompt_scores_equal_full_sequences(family, checkpointing):
    backbone, prompt, ids, mask, index = _setup(family, checkpointing)
    full = _scores_and_grads(backbone, _full_sequences, prompt, ids, mask, index)
    shared = _scores_and_grads(backbone, completion_scores, prompt, ids, mask, index)  # shares by default
    assert torch.allclose(shared[0], full[0], atol=1e-5), (shared[0] - full[0]).abs().max()
    assert torch.equal(shared[0] == 0, full[0] == 0)  # masked positions score 0 in both
    assert torch.allclose(shared[1], full[1], atol=1e-5)
    assert full[2] and set(shared[2]) == set(full[2])
    for name, grad in full[2].items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(shared[2][name], grad, rtol=1e-4, atol=1e-6), name


def test_one_completion_per_prompt_and_an_unused_prompt():
    backbone, prompt, ids, mask, _ = _setup("qwen2-audio", False)
    index = torch.tensor([1, 1, 1, 1, 1, 1])  # prompt 0 unused
    with torch.no_grad():
        full = _full_sequences(backbone, prompt, ids, mask, index)[0]
        shared = shared_prompt_scores(backbone, prompt, ids, mask, index)[0]
    assert torch.allclose(shared, full, atol=1e-5)

"""Full fine-tuning on one device keeps fp32 master weights and computes in the model's dtype.

AdamW at lr 1e-6 cannot move most bfloat16 weights (a step below half a bf16 ulp rounds away); with
fp32 masters every weight with a gradient moves. The forward passes run under autocast to bf16.
"""

import pytest
import torch

from emorl.models.sft import SFTLALM
from tests.fsdp_cases import CLASSES, collate, items
from tests.lalm_fixtures import tiny_model_dir

pytestmark = pytest.mark.slow  # optimiser steps on the tiny model (about 10 s)


def _module(**options):
    torch.manual_seed(0)
    return SFTLALM(class_names=CLASSES, model=str(tiny_model_dir("qwen2-audio")), prompt_format="ir",
                   dtype="bfloat16", full_finetune=True, lr=1e-6, **options)


def _share_moved(module) -> float:
    """One AdamW step at lr 1e-6 on one batch: the share of language-model weights that changed."""
    weights = {name: p for name, p in module.backbone.trainable_parameters() if "language_model.layers" in name}
    before = {name: p.detach().clone() for name, p in weights.items()}
    optimizer = torch.optim.AdamW([p for _, p in module.backbone.trainable_parameters()], lr=1e-6)
    loss, _ = module.sft_loss(collate(items()[:2]))
    loss.backward()
    optimizer.step()
    moved = sum(int((p.detach() != before[name]).sum()) for name, p in weights.items())
    return moved / sum(p.numel() for p in weights.values())


def test_configure_model_makes_fp32_masters_and_autocasts_to_bf16():
    module = _module()
    module.configure_model()
    module.configure_model()  # idempotent (Lightning calls it per stage)
    trainable = dict(module.backbone.trainable_parameters())
    assert trainable and all(p.dtype == torch.float32 for p in trainable.values())
    assert all(p.dtype == torch.bfloat16 for p in module.backbone.audio_tower.parameters())  # frozen: as loaded
    assert module.backbone.compute_dtype == torch.bfloat16
    with module.backbone.autocast():
        hidden = module.backbone.hf_model.lm_head(torch.ones(1, 64))
    assert hidden.dtype == torch.bfloat16
    share = _share_moved(module)
    assert share > 0.9, share


def test_without_masters_bf16_weights_barely_move():
    module = _module()  # configure_model not called: the weights stay bfloat16
    assert _share_moved(module) < 0.5


def test_init_checkpoint_of_fp32_masters_loads_without_rounding(tmp_path):
    from emorl.models.checkpoints import keep_trainable_weights
    from emorl.models.grpo import GRPOLALM

    first = _module()
    first.configure_model()
    with torch.no_grad():  # a step far below a bf16 ulp: kept only by fp32 masters
        for _, param in first.backbone.trainable_parameters():
            param.add_(1e-6)
    checkpoint = {"state_dict": first.state_dict()}
    keep_trainable_weights(first, checkpoint)
    path = tmp_path / "sft.ckpt"
    torch.save(checkpoint, path)
    second = GRPOLALM(class_names=CLASSES, model=str(tiny_model_dir("qwen2-audio")), prompt_format="ir",
                      dtype="bfloat16", full_finetune=True, init_checkpoint=str(path), beta=0.04)
    trained = dict(first.backbone.trainable_parameters())
    for name, param in second.backbone.trainable_parameters():
        assert param.dtype == torch.float32 and torch.equal(param, trained[name]), name
    assert all(p.dtype == torch.bfloat16 for p in second.reference[0].parameters())  # the frozen copy in dtype

"""EMO-RL's SFT rows and EmotionThinker's GRPO-PTR configs hold the papers' setting (all weights trained,
sharded over 8 GPUs, the published learning rates) and have single-GPU LoRA variants; the GRPO rows of
Tables 1 and 3 are pinned in tests/test_rl_configs.py."""

from pathlib import Path

import pytest

from tests.test_rl_configs import ROOT, _parse, assert_lora_variant_of, assert_papers_hardware, lora_variant

SFT = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "sft").glob("sft_ir_*.yaml"))
PTR = ["configs/emotionthinker_ptr.yaml", "configs/emotionthinker/ptr_qwen2_audio_meld.yaml"]


def test_every_sft_row_of_table_1_is_here():
    assert [Path(p).stem for p in SFT] == [f"sft_ir_{c}" for c in ("iemocap", "meld", "ravdess", "savee")]
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "sft" / "lora").glob("*.yaml")}
    assert shipped == {lora_variant(p) for p in SFT}
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "configs" / "emotionthinker" / "lora").glob("*.yaml")}
    assert shipped == {lora_variant(p) for p in PTR}


@pytest.mark.parametrize("rel", SFT, ids=lambda p: Path(p).stem)
def test_an_sft_row_trains_all_weights_with_adamw_1e5_for_5_epochs_on_8_gpus(rel):
    config = _parse(ROOT / rel)
    assert config.model.class_path == "emorl.models.sft.SFTLALM"
    assert (config.model.init_args.lr, config.trainer.max_epochs) == (1e-5, 5)  # EMO-RL 4.2
    assert_papers_hardware(config)


@pytest.mark.parametrize("rel", PTR, ids=lambda p: Path(p).stem)
def test_grpo_ptr_trains_all_weights_with_its_published_g_kl_and_lr_on_8_gpus(rel):
    config = _parse(ROOT / rel)
    init = config.model.init_args
    assert (init.num_generations, init.beta, init.lr) == (8, 0.04, 1e-6)  # EmotionThinker, as published
    assert_papers_hardware(config)


@pytest.mark.parametrize("rel", SFT + PTR, ids=lambda p: Path(p).stem)
def test_a_lora_variant_is_the_same_row_on_one_gpu(rel):
    assert_lora_variant_of(rel)

"""Audio-language backbones: tiny models, loading (folder, zoo name, errors), LoRA, trainable weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from emorl import zoo
from emorl.lalm import BackboneError, build_prompts, embed_prompts, load_backbone, render_prompts
from emorl.lalm.tiny import SPECIAL_TOKENS
from tests.lalm_fixtures import CARDS, FAMILIES, clips, messages, tiny_model_dir

CLASSES = {"qwen2-audio": "Qwen2AudioForConditionalGeneration",
           "qwen2.5-omni": "Qwen2_5OmniThinkerForConditionalGeneration"}


@pytest.fixture(autouse=True)
def _no_real_models(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("EMORL_MODELS", raising=False)


def _logits(backbone, batch):
    embeds = embed_prompts(backbone, batch)
    out = backbone.hf_model(inputs_embeds=embeds.inputs_embeds, attention_mask=embeds.attention_mask)
    return out.logits


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_loads_through_the_normal_path(family):
    path = tiny_model_dir(family)
    backbone = load_backbone(path)
    assert backbone.family == family and backbone.path == path
    assert type(backbone.hf_model).__name__ == CLASSES[family]
    tokenizer = backbone.tokenizer
    for token in SPECIAL_TOKENS[family]:
        token_id = tokenizer.convert_tokens_to_ids(token)
        assert tokenizer.convert_ids_to_tokens(token_id) == token
        assert tokenizer.tokenize(token) == [token]  # one special token, never split
    assert backbone.audio_token_id == tokenizer.convert_tokens_to_ids("<|AUDIO|>")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in backbone.eos_token_ids
    # the audio encoder keeps the real front end: 128 mel bins, 30 s -> 1500 positions
    audio_config = backbone.hf_model.config.audio_config
    assert audio_config.num_mel_bins == 128 and audio_config.max_source_positions == 1500
    assert backbone.processor.feature_extractor.feature_size == 128
    # the real chat template renders
    text = render_prompts(backbone, messages(1))[0]
    assert "<|audio_bos|><|AUDIO|><|audio_eos|>" in text
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("Which emotion?<|im_end|>\n<|im_start|>assistant\n")
    # the processor expands the placeholder: 25 audio tokens per second, as in the real models
    batch = build_prompts(backbone, messages(3), clips((1.0, 2.5, 0.6)))
    counts = (batch.input_ids == backbone.audio_token_id).sum(-1).tolist()
    assert counts == [25, 62, 15]
    assert batch.input_features.shape == (3, 128, 3000)
    assert (batch.attention_mask[:, -1] == 1).all() and (batch.attention_mask[:, 0] == 0).any()  # left padded
    # the vocabulary covers the answer format in few tokens
    assert len(tokenizer("<answer>angry</answer>").input_ids) <= 6


def test_omni_thinker_comes_out_of_the_full_checkpoint(tmp_path):
    from safetensors.torch import load_file, save_file

    path = tmp_path / "omni"
    shutil.copytree(tiny_model_dir("qwen2.5-omni"), path)
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_omni" and "talker_config" in config and "thinker_config" in config
    weights = load_file(path / "model.safetensors")
    assert all(key.startswith("thinker.") for key in weights)  # the hub's layout
    # talker / token2wav weights in the file are never loaded
    weights["talker.model.embed_tokens.weight"] = torch.zeros(3, 2)
    weights["token2wav.code_embedding.weight"] = torch.zeros(3, 2)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    backbone = load_backbone(path)
    state = backbone.hf_model.state_dict()
    assert not any("talker" in key or "token2wav" in key for key in state)
    assert torch.equal(state["model.language_model.embed_tokens.weight"], weights["thinker.model.embed_tokens.weight"])
    assert torch.equal(state["model.audio_tower.conv1.weight"], weights["thinker.audio_tower.conv1.weight"])
    assert torch.equal(state["lm_head.weight"], weights["thinker.lm_head.weight"])


def test_a_zoo_name_loads_from_emorl_models(tmp_path, monkeypatch):
    base = tmp_path / "models"
    shutil.copytree(tiny_model_dir("qwen2-audio"), base / CARDS["qwen2-audio"])
    monkeypatch.setenv("EMORL_MODELS", str(base))
    assert load_backbone("qwen2-audio-7b-instruct").path == base / "qwen2-audio-7b-instruct"
    assert load_backbone("Qwen/Qwen2-Audio-7B-Instruct").family == "qwen2-audio"


def test_zoo_cards_and_list(capsys):
    cards = {card.name: card for card in zoo.list_cards(kind="lalm")}
    assert set(cards) == set(CARDS.values())
    assert cards["qwen2-audio-7b-instruct"].backend == "qwen2-audio"
    assert cards["qwen2.5-omni-7b-thinker"].hub_id == "Qwen/Qwen2.5-Omni-7B"
    direct = cards["qwen2-audio-7b-instruct"].reference["zero_shot_direct"]
    assert direct["meld"] == {"ua": 18.96, "wa": 39.83, "f1": 19.84}
    zoo.list_main()
    out = capsys.readouterr().out
    assert "audio-language models" in out and "Qwen/Qwen2.5-Omni-7B" in out


def test_a_missing_model_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("EMORL_MODELS", str(tmp_path / "models"))
    with pytest.raises(zoo.ModelNotAvailableError) as err:
        load_backbone("qwen2-audio-7b-instruct")
    message = str(err.value)
    assert "hf download Qwen/Qwen2-Audio-7B-Instruct" in message
    assert "emorl zoo tiny qwen2-audio-7b-instruct" in message


def test_a_folder_of_another_model_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wavlm", "architectures": ["WavLMModel"]}))
    with pytest.raises(BackboneError, match="'wavlm' model .*Qwen2-Audio.*Qwen2.5-Omni"):
        load_backbone(tmp_path)
    with pytest.raises(BackboneError, match="no config.json"):
        load_backbone(tmp_path / "..")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("train_projector", [False, True])
def test_lora_trains_only_adapters_and_optionally_the_projector(family, train_projector):
    backbone = load_backbone(tiny_model_dir(family), lora={"r": 4, "alpha": 8, "dropout": 0.0},
                             train_projector=train_projector)
    trainable = [name for name, _ in backbone.trainable_parameters()]
    lora = [name for name in trainable if "lora_" in name]
    others = [name for name in trainable if "lora_" not in name]
    layers = backbone.hf_model.config.get_text_config().num_hidden_layers
    assert len(lora) == layers * 7 * 2  # q k v o gate up down, A and B
    assert all("language_model" in name for name in lora)
    assert bool(others) == train_projector
    projector = "multi_modal_projector" if family == "qwen2-audio" else "audio_tower.proj"
    assert all(projector in name and "modules_to_save" in name for name in others)
    tower = [p for n, p in backbone.audio_tower.named_parameters() if "modules_to_save" not in n]
    assert tower and not any(p.requires_grad for p in tower)
    assert not any("lora_" in name for name, _ in backbone.audio_tower.named_parameters())


def test_lora_targets_are_configurable():
    backbone = load_backbone(tiny_model_dir("qwen2-audio"), lora={"r": 2, "target_modules": ["q_proj", "v_proj"]})
    names = [name for name, _ in backbone.trainable_parameters()]
    assert len(names) == 2 * 2 * 2 and all(("q_proj" in n or "v_proj" in n) for n in names)
    with pytest.raises(BackboneError, match="unknown LoRA options"):
        load_backbone(tiny_model_dir("qwen2-audio"), lora={"rank": 2})


@pytest.mark.parametrize("family", FAMILIES)
def test_trainable_state_dict_round_trip(family):
    path = tiny_model_dir(family)
    a = load_backbone(path, lora={"r": 4}, train_projector=True)
    with torch.no_grad():
        for _, p in a.trainable_parameters():
            p.add_(torch.randn_like(p))
    state = a.trainable_state_dict()
    assert state and all(t.device.type == "cpu" for t in state.values())
    assert all("lora_" in k or "modules_to_save" in k for k in state)
    b = load_backbone(path, lora={"r": 4}, train_projector=True)
    b.load_trainable_state_dict(state)
    assert all(torch.equal(state[k], v) for k, v in b.trainable_state_dict().items())
    batch = build_prompts(a, messages(2), clips((1.0, 0.5)))
    assert torch.allclose(_logits(a, batch), _logits(b, batch))
    with pytest.raises(BackboneError, match="do not match"):
        load_backbone(path, lora={"r": 4}).load_trainable_state_dict(state)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_disabled_gives_the_base_model(family):
    path = tiny_model_dir(family)
    base = load_backbone(path)
    tuned = load_backbone(path, lora={"r": 4, "alpha": 8}, train_projector=True)
    with torch.no_grad():
        for name, p in tuned.trainable_parameters():
            p.add_(0.5 * torch.randn_like(p))  # lora_B starts at zero: make the adapters matter
    batch = build_prompts(base, messages(2), clips((1.0, 0.5)))
    with torch.no_grad():
        reference = _logits(base, batch)
        assert not torch.allclose(_logits(tuned, batch), reference, atol=1e-4)
        with tuned.adapter_disabled():
            assert torch.allclose(_logits(tuned, batch), reference, atol=1e-5)
        assert not torch.allclose(_logits(tuned, batch), reference, atol=1e-4)  # back on after the block


def test_full_finetune_and_frozen_evaluation():
    path = tiny_model_dir("qwen2-audio")
    full = load_backbone(path, full_finetune=True)
    trainable = {name for name, _ in full.trainable_parameters()}
    assert any(name.startswith("model.language_model.") for name in trainable)
    assert "lm_head.weight" in trainable and any("multi_modal_projector" in n for n in trainable)
    assert not any("audio_tower" in name for name in trainable)
    with pytest.raises(BackboneError, match="needs a LoRA backbone"):
        with full.adapter_disabled():
            pass
    assert not list(load_backbone(path).trainable_parameters())  # evaluation: all frozen
    with pytest.raises(BackboneError, match="not both"):
        load_backbone(path, lora={"r": 2}, full_finetune=True)


def test_gradient_checkpointing_and_attention_options():
    backbone = load_backbone(tiny_model_dir("qwen2.5-omni"), gradient_checkpointing=True,
                             attn_implementation="eager", lora={"r": 2})
    assert backbone.language_model.gradient_checkpointing
    assert backbone.hf_model.config._attn_implementation == "eager"
    # a training step still gets gradients into the adapters
    backbone.model.train()
    batch = build_prompts(backbone, messages(2), clips((1.0, 0.5)))
    _logits(backbone, batch).float().pow(2).mean().backward()
    assert all(p.grad is not None for _, p in backbone.trainable_parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_bfloat16_load(family):
    backbone = load_backbone(tiny_model_dir(family), dtype="bfloat16")
    assert backbone.dtype == torch.bfloat16
    assert all(p.dtype == torch.bfloat16 for p in backbone.language_model.parameters())
    batch = build_prompts(backbone, messages(2), clips((1.0, 0.5)))
    with torch.no_grad():
        assert embed_prompts(backbone, batch).inputs_embeds.dtype == torch.bfloat16
    with pytest.raises(BackboneError, match="dtype must be"):
        load_backbone(tiny_model_dir(family), dtype="float8")

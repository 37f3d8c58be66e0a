"""GRPO module: the audio tower runs once per prompt per step, and a short fit logs what it must."""

from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emorl.cli import main
from emorl.models.grpo import GRPOLALM
from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import clips, tiny_model_dir


def test_one_rollout_runs_the_audio_tower_once_per_prompt_not_per_answer(monkeypatch):
    module = GRPOLALM(["neutral", "happy", "sad", "angry"], model=str(tiny_model_dir("qwen2-audio")),
                      dtype="float32", num_generations=5, max_new_tokens=6, beta=0.04, num_iterations=2,
                      lora={"r": 2, "alpha": 4})
    calls = []
    tower = module.backbone.audio_tower
    tower.register_forward_hook(lambda mod, args, kwargs, out: calls.append(args[0].shape[0]), with_kwargs=True)
    waves = clips((0.7, 1.3, 0.5))
    wave = torch.zeros(3, max(len(w) for w in waves))
    for i, w in enumerate(waves):
        wave[i, : len(w)] = torch.from_numpy(w)
    batch = {"wave": wave, "wave_lengths": torch.tensor([len(w) for w in waves]), "label": torch.tensor([0, 2, 3]),
             "key": ["a", "b", "c"]}

    class FakeTrainer:
        world_size = 1

    monkeypatch.setattr(GRPOLALM, "trainer", FakeTrainer(), raising=False)
    rollout = module._rollout(batch)
    assert calls == [3]  # one call, three clips: generation, old and reference log-probs reuse it
    assert len(rollout) == 15 and rollout.old_logps.shape == rollout.ref_logps.shape == rollout.completion_ids.shape
    assert rollout.prompt_index.tolist() == [0] * 5 + [1] * 5 + [2] * 5


def test_short_fit_logs_rewards_alpha_kl_and_saves_lora_weights_only(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/emorl/lora/emorl_esr.yaml").read_text())
    config["trainer"].update({"max_steps": 2, "accelerator": "cpu", "enable_progress_bar": False,
                              "val_check_interval": None, "limit_val_batches": 1, "num_sanity_val_steps": 0})
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    config["trainer"]["callbacks"][0]["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    config["model"]["init_args"].update({"model": str(tiny_model_dir("qwen2-audio")), "dtype": "float32",
                                        "gradient_checkpointing": False, "max_new_tokens": 8,
                                        "eval_max_new_tokens": 6, "num_generations": 3})
    config["data"].update({"data_dir": str(corpus.root), "num_workers": 0, "batch_size": 2})
    path = tmp_path / "grpo.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    events = EventAccumulator(str(tmp_path / "runs" / "emorl_esr_lora" / "version_0")).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/reward/format_esr", "train/reward/eswr", "train/alpha", "train/kl", "train/clip_fraction",
                "train/entropy", "train/zero_std_groups", "train/truncated", "train/answer_length_max",
                "train/time_generate", "train/time_update"):
        assert tag in scalars, tag
    alphas = [e.value for e in events.Scalars("train/alpha")]
    assert alphas[0] == pytest.approx(1.0) and alphas[-1] < 1.0
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all("lora_" in k for k in ckpt["state_dict"]) and ckpt["state_dict"]
    assert "alpha" in ckpt["emorl_grpo"]


def test_the_policy_pass_runs_in_train_mode_so_gradient_checkpointing_acts(tmp_path):
    import lightning as L

    from emorl.data.datamodule import EmoDataModule

    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    module = GRPOLALM(["neutral", "happy", "sad", "angry"], model=str(tiny_model_dir("qwen2-audio")),
                      dtype="float32", num_generations=2, max_new_tokens=4, beta=0.04, gradient_checkpointing=True,
                      lora={"r": 2, "alpha": 4}, prompt_format="ir", eval_max_new_tokens=2)
    seen = []
    layer = module.backbone.language_model.layers[0]
    layer.register_forward_hook(lambda mod, args, out: seen.append((torch.is_grad_enabled(), mod.training)))
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        limit_val_batches=0, enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(module, datamodule=EmoDataModule(str(corpus.root), batch_size=2, num_workers=0))
    with_grad = [training for grad, training in seen if grad]
    assert with_grad and all(with_grad)  # the policy pass: train mode (checkpointing applies)


def test_rollout_options_refuse_zero_answers():
    from emorl.rl.rollout import RolloutOptions

    with pytest.raises(ValueError, match=r"num_generations must be >= 1 \(G answers per prompt\), not 0"):
        GRPOLALM(["happy", "sad"], model=str(tiny_model_dir("qwen2-audio")), dtype="float32", num_generations=0)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, not 0"):
        RolloutOptions(num_generations=2, max_new_tokens=0)
    assert RolloutOptions(num_generations=1, max_new_tokens=1).min_new_tokens == 0

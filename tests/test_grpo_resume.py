"""GRPO resumes exactly: 4 updates in one run equal 2 updates, a checkpoint, a fresh run from it and 2 more.

With num_iterations 2 each update is two optimiser steps (global_step counts optimiser steps)."""

import lightning as L
import torch

from emorl.data.datamodule import EmoDataModule
from emorl.models.grpo import GRPOLALM
from emorl.rl.rewards import REWARDS
from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import tiny_model_dir


class RecordSteps(L.Callback):
    """Per optimiser step: the sampled answers, the rewards, the loss and the LoRA weights after it."""

    def __init__(self):
        self.steps: dict[int, dict] = {}
        self.rollouts: list = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rollouts.append(([str(k) for k in batch["key"]], torch.tensor([r.rewards.sum() for r in module.buffer])))
        if module.buffer:  # mid-accumulation: no step yet
            return
        weights = torch.cat([p.detach().flatten() for p in module.parameters() if p.requires_grad])
        self.steps[trainer.global_step] = {
            "keys": [k for keys, _ in self.rollouts for k in keys],
            "loss": float(trainer.callback_metrics["train/loss"]),
            "weights": weights.clone(),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "alpha": module.alpha,
        }
        self.rollouts = []


def _run(corpus, tmp_path, name, ckpt_path=None, save_every=None):
    L.seed_everything(0)
    module = GRPOLALM(
        ["neutral", "happy", "sad", "angry"], model=str(tiny_model_dir("qwen2-audio")), dtype="float32",
        num_generations=3, max_new_tokens=6, beta=0.04, num_iterations=2, accumulate_grad_batches=2,
        lora={"r": 2, "alpha": 4, "dropout": 0.1}, lr=1e-2, warmup_steps=3, prompt_format="ir",
        rewards=[{"name": "format_ir", "weight": 1.0}, {"name": "answer_length", "weight": 1.0}], eval_max_new_tokens=4,
    )
    data = EmoDataModule(str(corpus.root), batch_size=4, num_workers=0, seed=0)
    record = RecordSteps()
    callbacks = [record]
    if save_every:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / name, every_n_train_steps=save_every,
                                                             save_top_k=-1, filename="{step}"))
    trainer = L.Trainer(max_steps=8, accelerator="cpu", logger=False, enable_progress_bar=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks,
                        enable_checkpointing=bool(save_every), default_root_dir=tmp_path / name)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return record.steps


def test_four_steps_equal_two_then_resume_then_two(tmp_path, monkeypatch):
    # the random tiny model never answers in format: a length reward gives the groups a spread
    monkeypatch.setitem(REWARDS, "answer_length", lambda texts, labels, context: [len(t) / 10 for t in texts])
    # 3 batches an epoch, 2 per update: the checkpoint after update 2 is in the middle of the second epoch
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    whole = _run(corpus, tmp_path, "whole", save_every=4)
    assert sorted(whole) == [2, 4, 6, 8]
    checkpoint = torch.load(tmp_path / "whole" / "step=4.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 1}]
    assert len(checkpoint["emorl_grpo"]["rng"]) == 1 and checkpoint["emorl_grpo"]["alpha"] < 1.0
    resumed = _run(corpus, tmp_path, "resumed", ckpt_path=str(tmp_path / "whole" / "step=4.ckpt"))
    assert sorted(resumed) == [6, 8]
    for step in (6, 8):
        assert resumed[step]["keys"] == whole[step]["keys"], step  # same batches, same order
        assert resumed[step]["lr"] == whole[step]["lr"] and resumed[step]["alpha"] == whole[step]["alpha"]
        assert resumed[step]["loss"] == whole[step]["loss"], step
        torch.testing.assert_close(resumed[step]["weights"], whole[step]["weights"], rtol=0, atol=0)
    # the run really learned something between the checkpoint and the end (the test could fail)
    assert not torch.equal(whole[4]["weights"], whole[8]["weights"])
    assert whole[6]["keys"] != whole[8]["keys"]

"""Checkpoints kept from an earlier emorl, to prove that a run started before a change resumes after it.

``tests/data/compat/`` holds, for a tiny GRPO run (LoRA, IR, KL, 2 iterations, accumulation 2, a
warm-up scheduler) and a tiny SFT run (LoRA, no scheduler), the checkpoint after 2 optimiser
steps and the trained weights after 4 steps of the same uninterrupted run, both written by the
code of commit efda22b (before the restructuring of issue 13). ``tests/test_checkpoint_compat.py``
resumes each checkpoint with today's code and compares the weights after 4 steps.

Regenerate (only when a checkpoint format change is intended, and say so in CHANGELOG.md):

    python -m tests.compat_checkpoints tests/data/compat
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch

from emorl.data.datamodule import EmoDataModule
from emorl.models.grpo import GRPOLALM
from emorl.models.sft import SFTLALM
from emorl.rl.rewards import REWARDS
from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import tiny_model_dir

CLASSES = ["neutral", "happy", "sad", "angry"]
COMPAT = Path(__file__).resolve().parent / "data" / "compat"
STEPS = 4
SAVED_AT = 2


def answer_length(texts, labels, context) -> list[float]:
    """The kept GRPO run's reward: the random tiny model never answers in format, so a length
    reward gives the groups a spread (and the policy something to learn)."""
    return [len(t) / 10 for t in texts]


def make_module(kind: str) -> L.LightningModule:
    """The module of a kept run, with the options it was trained with (GRPO needs ``answer_length``
    in :data:`REWARDS`: set it with ``monkeypatch.setitem(REWARDS, "answer_length", answer_length)``)."""
    model = str(tiny_model_dir("qwen2-audio"))
    if kind == "grpo":
        return GRPOLALM(
            CLASSES, model=model, dtype="float32", num_generations=3, max_new_tokens=6, beta=0.04,
            num_iterations=2, accumulate_grad_batches=2, lora={"r": 2, "alpha": 4, "dropout": 0.0}, lr=1e-2,
            warmup_steps=3, prompt_format="ir", rewards=[{"name": "format_ir", "weight": 1.0}, {"name": "answer_length", "weight": 1.0}],
            eval_max_new_tokens=4,
        )
    return SFTLALM(CLASSES, model=model, dtype="float32", lora={"r": 2, "alpha": 4, "dropout": 0.0}, lr=1e-2,
                   max_new_tokens=4)


def trainable_weights(module: L.LightningModule) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters() if p.requires_grad}


def run(kind: str, work: Path, max_steps: int, ckpt_path: str | None = None,
        save_at: int | None = None) -> dict[str, torch.Tensor]:
    """Train the kept run to ``max_steps`` (from ``ckpt_path`` if given); its trainable weights."""
    L.seed_everything(0)
    corpus = make_tiny_corpus(work / "corpus", per_speaker_label=1)
    module = make_module(kind)
    data = EmoDataModule(str(corpus.root), batch_size=4, num_workers=0, seed=0)
    callbacks = []
    if save_at:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(
            dirpath=work / "ckpt", every_n_train_steps=save_at, save_top_k=-1, filename="{step}"))
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks,
                        enable_checkpointing=bool(save_at), enable_model_summary=False, default_root_dir=work)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    return trainable_weights(module)


def write(out: Path) -> None:
    """Run each kept run once for STEPS steps, keeping the checkpoint at SAVED_AT and the final weights."""
    import shutil
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    for kind in ("grpo", "sft"):
        with tempfile.TemporaryDirectory() as tmp:
            weights = run(kind, Path(tmp), STEPS, save_at=SAVED_AT)
            shutil.copy(Path(tmp) / "ckpt" / f"step={SAVED_AT}.ckpt", out / f"{kind}_step{SAVED_AT}.ckpt")
        torch.save(weights, out / f"{kind}_step{STEPS}_weights.pt")


if __name__ == "__main__":
    torch.set_num_threads(1)
    REWARDS["answer_length"] = answer_length
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else COMPAT)

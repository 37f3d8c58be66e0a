"""GRPO's progress bar (issue 18, item 5): a module that steps its optimiser itself, once per two
batches, gets a bar that counts optimiser steps against ``max_steps`` (not batches against steps)
and shows the last mean reward and accuracy; ``emorl fit`` puts it in place of Lightning's bar."""

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from emorl.run_summary import EmorlProgressBar


class _TwoBatchesPerStep(L.LightningModule):
    """Manual optimisation, one optimiser step per two batches, logging a reward as GRPOLALM does."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        loss = (self.weight - batch[0].mean()) ** 2
        self.manual_backward(loss)
        if batch_idx % 2 == 1:
            self.optimizers().step()
            self.optimizers().zero_grad()
        self.log_dict({"train/reward": 0.25 * (batch_idx + 1), "train/accuracy": 0.5}, batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_bar_counts_optimiser_steps_and_shows_reward_and_accuracy(tmp_path):
    bar = EmorlProgressBar()
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[bar], default_root_dir=tmp_path)
    module = _TwoBatchesPerStep()
    assert EmorlProgressBar.counts_steps(trainer, module)
    trainer.fit(module, DataLoader(TensorDataset(torch.randn(16, 2)), batch_size=1))
    assert trainer.global_step == 3
    progress = bar.train_progress_bar
    assert (progress.n, progress.total) == (3, 3)  # steps of 3, not batches (6) of an epoch (16)
    assert progress.desc.startswith("optimiser steps")
    assert progress.postfix.startswith("reward=1.500, acc=0.500")  # the 6th batch's reward, then accuracy


def test_an_automatically_optimised_module_keeps_the_batch_count():
    trainer = L.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False)
    assert not EmorlProgressBar.counts_steps(trainer, L.LightningModule())

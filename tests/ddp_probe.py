"""A callback for the DDP test: each rank writes what it trained on and what was logged (JSON).

Importing it also registers an ``answer_length`` reward: the random tiny model never answers in
format, so format and accuracy rewards are all 0 and nothing would be learned; a length reward
gives the groups a spread (and the ranks different gradients, which DDP must average).
"""

import json
import os
from pathlib import Path

import lightning as L
import torch

from emorl.rl.rewards import REWARDS

REWARDS.setdefault("answer_length", lambda texts, labels, context: [len(t) / 10 for t in texts])


def _weights(module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters() if p.requires_grad]).double()


class RecordRank(L.Callback):
    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.steps: list[dict] = []
        self.start_abs = 0.0

    def on_train_start(self, trainer, module):
        self.start_abs = float(_weights(module).abs().sum())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        rollout = module.last_rollout
        self.steps.append({
            "keys": [str(k) for k in batch["key"]],
            "local_reward": float(rollout.rewards.mean()),
            "local_answers": len(rollout),
            "logged_reward": float(trainer.callback_metrics["train/reward"]),
        })

    def on_train_end(self, trainer, module):
        weights = _weights(module)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        record = {"rank": trainer.global_rank, "world_size": trainer.world_size, "steps": self.steps,
                  "weights_sum": float(weights.sum()), "weights_abs": float(weights.abs().sum()),
                  "start_abs": self.start_abs,
                  "global_step": trainer.global_step, "pid": os.getpid()}
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(record))

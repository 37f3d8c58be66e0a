"""Classic acoustic baseline: utterance-level MFCC + prosody statistics -> small MLP.

The features (:func:`emorl.features.acoustic.acoustic_features`) are computed once per clip by
the module's collator and cached in memory, so epochs after the first cost only the MLP.
They are standardised with the training set's mean and standard deviation, which are measured
at the start of fitting and stored in the checkpoint.
"""

from __future__ import annotations

import logging
from typing import Literal, Sequence

import lightning as L
import numpy as np
import torch
from torch import nn

from emorl.features.acoustic import ACOUSTIC_FEATURE_DIM, acoustic_features
from emorl.models.evaluation import StageMetrics

log = logging.getLogger(__name__)


class AcousticCollator:
    """Turns ``EmotionDataset`` items into ``{"features", "label", "key"}``, caching features.

    The cache key is the utterance key and clip length, so a truncated clip is not confused with
    its full version. Picklable, so DataLoader workers get their own copy.
    """

    def __init__(self, sample_rate: int = 16_000) -> None:
        self.sample_rate = sample_rate
        self.cache: dict[tuple[str, int], np.ndarray] = {}

    def features(self, item: dict) -> np.ndarray:
        cache_key = (item["key"], len(item["wave"]))
        if cache_key not in self.cache:
            self.cache[cache_key] = acoustic_features(np.asarray(item["wave"]), self.sample_rate)
        return self.cache[cache_key]

    def __call__(self, items: Sequence[dict | None]) -> dict | None:
        items = [item for item in items if item is not None]
        if not items:
            return None
        return {
            "features": torch.from_numpy(np.stack([self.features(item) for item in items])),
            "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
            "key": [item["key"] for item in items],
        }


class AcousticBaseline(L.LightningModule):
    """MFCC + prosody statistics -> MLP emotion classifier.

    Args:
        class_names: the training label set (linked from the DataModule by the CLI).
        hidden_dim: width of the hidden layers.
        num_layers: number of hidden layers.
        dropout: dropout after each hidden layer.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        class_weighting: ``balanced`` weighs the loss by inverse class frequency of the training
            split (helps UA on imbalanced corpora such as MELD); ``none`` leaves it plain.
    """

    def __init__(
        self,
        class_names: list[str],
        hidden_dim: int = 256,
        num_layers: int = 2,
        dropout: float = 0.3,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        class_weighting: Literal["none", "balanced"] = "balanced",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width = ACOUSTIC_FEATURE_DIM
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_dim
        layers.append(nn.Linear(width, len(class_names)))
        self.mlp = nn.Sequential(*layers)
        self.register_buffer("feature_mean", torch.zeros(ACOUSTIC_FEATURE_DIM))
        self.register_buffer("feature_std", torch.ones(ACOUSTIC_FEATURE_DIM))
        self.register_buffer("class_weights", torch.ones(len(class_names)))
        self.collate_fn = AcousticCollator()
        self.metrics = StageMetrics(class_names)
        self.test_results: dict[str, dict[str, float]] = {}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits for a (B, D) batch of raw (unstandardised) features."""
        return self.mlp((features - self.feature_mean) / self.feature_std)

    # -- fitting ----------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """Measure feature statistics and class weights on the training split (fills the cache)."""
        dataset = self.trainer.datamodule.datasets["train"]
        feats = [self.collate_fn.features(item) for item in map(dataset.__getitem__, range(len(dataset))) if item]
        if not feats:
            from emorl.errors import EmorlError

            corpus = self.trainer.datamodule.corpus.root
            raise EmorlError(f"no training clip of {corpus} could be decoded ({len(dataset)} clips), "
                             f"run `emorl data check {corpus}` and fix or re-prepare the corpus")
        stacked = torch.from_numpy(np.stack(feats)).to(self.device)
        self.feature_mean.copy_(stacked.mean(0))
        self.feature_std.copy_(stacked.std(0).clamp_min(1e-6))
        if self.hparams.class_weighting == "balanced":
            counts = torch.bincount(torch.tensor(dataset.label_ids), minlength=len(self.hparams.class_names))
            weights = counts.sum() / (len(counts) * counts.clamp_min(1).float())
            self.class_weights.copy_(weights.to(self.device))

    def training_step(self, batch: dict | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every clip of the batch was undecodable (already logged)
            return None
        logits = self(batch["features"])
        loss = nn.functional.cross_entropy(logits, batch["label"], weight=self.class_weights)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["label"]))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)

    # -- evaluation -------------------------------------------------------------------------------
    def validation_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is None:
            return
        logits = self(batch["features"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        self.log("val/loss", loss, batch_size=len(batch["label"]), sync_dist=True)
        self.metrics.update("val", logits.argmax(-1), batch["label"])

    def on_validation_epoch_end(self) -> None:
        self.metrics.log_validation(self)

    def test_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch is None:
            return
        name = self.trainer.datamodule.test_names[dataloader_idx]
        preds = self(batch["features"]).argmax(-1)
        self.metrics.update("test", preds, batch["label"], test_name=name, keys=batch["key"])

    def on_test_epoch_end(self) -> None:
        self.test_results = self.metrics.log_test(self)

    def predict_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        if batch is None:
            return []
        probs = self(batch["features"]).softmax(-1)
        names = self.hparams.class_names
        # the predict loaders' names: the predict_path's (emorl predict --data.predict_path), else the test sets'
        datamodule = self.trainer.datamodule
        sets = getattr(datamodule, "predict_names", None) or getattr(datamodule, "test_names", None) or ["predict"]
        test_set = sets[dataloader_idx]
        return [
            {"test_set": test_set, "key": key, "emotion": names[int(p.argmax())],
             "probabilities": dict(zip(names, p.tolist()))}
            for key, p in zip(batch["key"], probs)
        ]

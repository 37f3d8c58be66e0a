"""EmoBox's probe on a frozen speech encoder: the SSL linear-probe baselines.

Head (EmoBox): ``Linear(D, 256) -> ReLU -> mean over the clip's valid frames -> Linear(256, C)``,
cross-entropy (= EmoBox's NLL on log-softmax), Adam, lr 1e-4, batch 32, 20 epochs; features from
the encoder's last layer (``layer: last``), another layer (``layer: 12``), or a learned
softmax-weighted sum of all hidden states (``layer: weighted``, as s3prl's Featurizer / SUPERB).

With a ``cache_dir`` (default), features come from :mod:`emorl.upstreams.cache`: at the start of
each stage (``setup``) every clip of the stage's datasets that is not cached yet is extracted
once, in the main process (each DDP rank takes a share), and the upstream is released; batches
are then read from disk by the module's ``collate_fn``, so training never runs the upstream, and
later runs, folds and epochs reuse the features. At fit start the test sets are extracted too
(``precompute_test_sets``), so ``emorl test`` afterwards needs no encoder in memory either.
With a cache the module says ``needs_waveforms = False``, so the DataModule's loaders do not
decode audio at all: items carry the manifest row and the collator reads their features (it
decodes only a clip the cache lacks; clips that failed to decode during the fill are dropped).
Without a cache the frozen upstream runs on every batch.

Checkpoints hold the probe's weights only: the upstream is not a registered sub-module (it is
re-loaded from ``upstream`` when needed), and :meth:`on_save_checkpoint` drops any upstream key
that might have slipped in. The upstream's identity is stored beside the weights, and loading a
checkpoint warns when the encoder's files have changed since.
"""

from __future__ import annotations

import logging
from typing import Literal, Union

import lightning as L
import torch
from torch import nn

from emorl.models.evaluation import StageMetrics
from emorl.upstreams import UpstreamLoader, masked_mean, upstream_dims
from emorl.upstreams.cache import CachedFeatureCollator, FeatureCache

log = logging.getLogger(__name__)

UPSTREAM_PREFIX = "_upstream."


class LinearProbe(L.LightningModule):
    """EmoBox's probe (Linear -> ReLU -> masked mean -> Linear) on a frozen upstream.

    Args:
        class_names: the training label set (linked from the DataModule by the CLI).
        upstream: a zoo name (``wavlm-large``; ``emorl zoo list``) or a local model folder.
        layer: ``last`` (EmoBox), a hidden-state index (0 = transformer input), or ``weighted``
            (learned softmax weights over every hidden state; caches all of them).
        cache_dir: feature cache directory (shared by all upstreams, runs and folds); ``null``
            runs the upstream on every batch.
        hidden_dim: width of the probe's hidden layer (EmoBox: 256).
        lr: Adam learning rate (EmoBox: 1e-4).
        upstream_dtype: the encoder's compute dtype (``float32``; ``float16`` / ``bfloat16`` on
            GPUs for speed; part of the cache identity).
        cache_dtype: storage dtype of cached features (``float16`` halves the disk).
        extract_batch_size: clips per upstream forward while extracting.
        precompute_test_sets: at fit start, also extract the test sets.
    """

    def __init__(
        self,
        class_names: list[str],
        upstream: str,
        layer: Union[int, Literal["last", "weighted"]] = "last",
        cache_dir: str | None = "cache/features",
        hidden_dim: int = 256,
        lr: float = 1e-4,
        upstream_dtype: Literal["float32", "float16", "bfloat16"] = "float32",
        cache_dtype: Literal["float32", "float16", "bfloat16"] = "float32",
        extract_batch_size: int = 8,
        precompute_test_sets: bool = True,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if isinstance(layer, str) and layer not in ("last", "weighted"):
            raise ValueError(f"layer must be 'last', 'weighted' or an integer, not {layer!r}")
        num_layers, feature_dim = upstream_dims(upstream)
        if isinstance(layer, int) and not -(num_layers + 1) <= layer <= num_layers:
            raise ValueError(f"layer {layer} out of range: {upstream} has hidden states 0..{num_layers}")
        # what the cache stores: "all" for weighted, "last" for the last index (-1, num_layers)
        self.feature_layer = {"weighted": "all", "last": "last"}.get(layer) if isinstance(layer, str) else (
            "last" if layer % (num_layers + 1) == num_layers else layer % (num_layers + 1)
        )
        self.feature_dim = feature_dim
        self.loader = UpstreamLoader(upstream, dtype=upstream_dtype)
        if layer == "weighted":
            self.layer_weights = nn.Parameter(torch.zeros(num_layers + 1))
        self.proj = nn.Linear(feature_dim, hidden_dim)
        self.classifier = nn.Linear(hidden_dim, len(class_names))
        self.cache: FeatureCache | None = None
        self.collate_fn: CachedFeatureCollator | None = None
        if cache_dir is not None:
            self.cache = FeatureCache(cache_dir, self.loader.identity, self.feature_layer, cache_dtype)
            self.collate_fn = CachedFeatureCollator(self.cache, self.loader, extract_batch_size)
        self._filled: dict[int, object] = {}  # id -> dataset (held, so ids are not reused)
        self.metrics = StageMetrics(class_names)
        self.test_results: dict[str, dict[str, float]] = {}

    # -- the model --------------------------------------------------------------------------------
    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits from frame features ``(B, T, D)`` (or ``(B, L, T, D)`` for ``weighted``)."""
        if features.dim() == 4:
            weights = self.layer_weights.softmax(0).to(features.dtype)
            features = torch.einsum("l,bltd->btd", weights, features)
        hidden = torch.relu(self.proj(features))
        return self.classifier(masked_mean(hidden, lengths))

    def upstream_module(self):
        """The frozen upstream on this module's device (loaded on first use, never checkpointed)."""
        self.loader.device = self.device
        return self.loader()

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "features" in batch:
            return batch["features"].float(), batch["lengths"]
        features, lengths = self.upstream_module().extract(batch["wave"], batch["wave_lengths"], self.feature_layer)
        return features.float(), lengths

    def logits(self, batch: dict) -> torch.Tensor:
        return self(*self._inputs(batch))

    # -- the feature cache ------------------------------------------------------------------------
    @property
    def needs_waveforms(self) -> bool:
        """False with a feature cache: the loaders need not decode audio (read by EmoDataModule)."""
        return self.cache is None

    def setup(self, stage: str) -> None:
        """Extract the features of this stage's datasets that are not cached yet (see the module doc)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        names = getattr(datamodule, "class_names", None)
        if names is not None and list(names) != list(self.hparams.class_names):
            raise ValueError(
                f"this probe's classes {list(self.hparams.class_names)} (from its checkpoint or config) differ "
                f"from the DataModule's {list(names)}: label ids would not match. Test a checkpoint with the "
                "data settings it was trained with (data_dir and data.classes)"
            )
        if self.cache is None or datamodule is None or not hasattr(datamodule, "datasets"):
            return
        names = {"fit": ["train", "valid"], "validate": ["valid"]}.get(stage, [])
        if stage in ("test", "predict") or (stage == "fit" and self.hparams.precompute_test_sets):
            if stage == "fit" and hasattr(datamodule, "test_specs"):
                datamodule.setup("test")
            names += [f"test/{name}" for name in getattr(datamodule, "test_names", [])]
        datasets = [datamodule.datasets[n] for n in names if n in datamodule.datasets]
        self.fill_cache(datasets, num_workers=int(getattr(datamodule.hparams, "num_workers", 0)))

    def fill_cache(self, datasets: list, num_workers: int = 0) -> None:
        trainer = self.trainer
        self.loader.device = self.device
        for dataset in datasets:
            if id(dataset) in self._filled:
                continue
            index = self.cache.fill(
                dataset, self.loader, batch_size=self.hparams.extract_batch_size, num_workers=num_workers,
                rank=trainer.global_rank, world_size=trainer.world_size,
            )
            self.collate_fn.index.update(index)
            self._filled[id(dataset)] = dataset
        trainer.strategy.barrier("emorl_feature_cache")
        if self.loader.loaded:
            log.info("feature cache %s: %d clips extracted; releasing the upstream",
                     self.cache.directory, self.cache.extracted)
            self.loader.release()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    # -- checkpoints: probe weights only ----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(UPSTREAM_PREFIX) or k.startswith("loader.")]:
            del state[key]
        checkpoint["emorl_upstream"] = {"upstream": self.hparams.upstream, "identity": self.loader.identity}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        trained = (checkpoint.get("hyper_parameters") or {}).get("class_names")
        if trained is not None and list(trained) != list(self.hparams.class_names):
            raise ValueError(
                f"this checkpoint's probe was trained on the classes {list(trained)}, but the DataModule's "
                f"label set is {list(self.hparams.class_names)}: label ids would not match. Test a checkpoint "
                "with the data settings it was trained with (data_dir and data.classes)"
            )
        saved = (checkpoint.get("emorl_upstream") or {}).get("identity")
        if saved and saved != self.loader.identity:
            log.warning(
                "this probe was trained on upstream %s with identity %s, but %s now has identity %s "
                "(its weights or config changed): its features may not match the probe",
                checkpoint["emorl_upstream"].get("upstream"), saved, self.hparams.upstream, self.loader.identity,
            )

    # -- fitting ----------------------------------------------------------------------------------
    def training_step(self, batch: dict | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:  # every clip of the batch was undecodable (already logged)
            return None
        logits = self.logits(batch)
        loss = nn.functional.cross_entropy(logits, batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["label"]))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=self.hparams.lr)

    # -- evaluation -------------------------------------------------------------------------------
    def validation_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is None:
            return
        logits = self.logits(batch)
        loss = nn.functional.cross_entropy(logits, batch["label"])
        self.log("val/loss", loss, batch_size=len(batch["label"]), sync_dist=True)
        self.metrics.update("val", logits.argmax(-1), batch["label"])

    def on_validation_epoch_end(self) -> None:
        self.metrics.log_validation(self)

    def test_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> None:
        if batch is None:
            return
        name = self.trainer.datamodule.test_names[dataloader_idx]
        preds = self.logits(batch).argmax(-1)
        self.metrics.update("test", preds, batch["label"], test_name=name, keys=batch["key"])

    def on_test_epoch_end(self) -> None:
        self.test_results = self.metrics.log_test(self)

    def predict_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        if batch is None:
            return []
        probs = self.logits(batch).softmax(-1)
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

"""EmoDataModule: the one DataModule every emorl model trains and tests on.

It reads a prepared corpus (``emorl data prepare``) and yields batches of raw 16 kHz waveforms with
label ids in the *training* corpus's label set. Models that need features (a processor, MFCCs)
turn these into their own inputs through a ``collate_fn`` property on the LightningModule, which
the DataModule uses when present.

Label rule for a test corpus whose label set differs from the training corpus (documented in
``docs/data.md``): each test utterance's canonical label is first passed through
``label_aliases`` (e.g. ``{calm: neutral}``); if the result is a class of the training label set
the utterance is kept with that class id, otherwise it is dropped (``unknown_test_labels: drop``,
counted and logged per test set) or raises (``unknown_test_labels: error``). Predictions may
still be any training class, so a MELD-trained model tested on RAVDESS can answer "surprise".
``classes`` narrows the training label set to a subset of the corpus's classes (EmoBox's
cross-corpus track trains on the 4 shared emotions): utterances of the other classes are dropped
from every split, and test labels outside the subset follow the rule above.

Decoding. A model that reads its inputs from elsewhere (the linear probe reading cached
features) says so with ``needs_waveforms = False``; the DataModule reads it when it builds a
loader, as it reads ``collate_fn``, and its datasets then yield items *without* decoding the
audio (``wave`` is ``None``; the item's ``decode`` callable decodes it on demand, so a collator
can still fall back to the audio for a clip it cannot serve). ``decode_audio: always`` turns this
off.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping

import lightning as L
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from emorl.audio import TARGET_SAMPLE_RATE, DurationPolicy
from emorl.data.dataset import EmotionDataset, collate_waves, failure_reasons
from emorl.data.manifest import ManifestError, PreparedCorpus, load_prepared_corpus
from emorl.data.sampling import (
    EpochShuffleSampler,
    EvaluationShardSampler,
    LengthBucketSampler,
    ResumableDataLoader,
    split_train_valid,
)
from emorl.data.skips import CountingCollate, EpochSkips, epoch_verdict, take_count
from emorl.errors import EmorlError
from emorl.labels import LabelSet, UnknownLabelError, get_named_label_set

log = logging.getLogger(__name__)


@dataclass
class TestSet:
    """A named test set: a prepared corpus folder, a fold and a split (``all`` = every row)."""

    __test__ = False  # not a pytest test class

    path: str
    fold: int = 1
    split: Literal["train", "valid", "test", "all"] = "test"


class EmoDataModule(L.LightningDataModule):
    """Train / validation / named test sets from prepared corpora.

    Args:
        data_dir: prepared training corpus (``emorl data prepare ... --out DIR``).
        fold: which of its folds to use.
        test_sets: extra named test sets, e.g. ``{ravdess: {path: data/ravdess_track2}}``; each is
            evaluated and logged under its own name (``test/<name>/ua``).
        include_own_test: also test on the training corpus's own test split (named after it).
        batch_size: training batch size; ``eval_batch_size`` for validation / test (default same).
        num_workers: DataLoader worker processes (0 = load in the main process).
        sample_rate: waveform rate handed to models.
        max_seconds / duration_mode: clips over ``max_seconds`` are skipped (EmoBox), truncated or
            kept; skipping uses the manifest's ``length`` so no audio is decoded to decide.
        val_fraction: share of the training split carved out for validation when the fold has
            no ``valid`` file (all corpora but MELD); stratified by label, seeded.
        val_group_by: ``utterance`` or ``speaker`` (whole speakers go to validation).
        unknown_test_labels: ``drop`` or ``error`` for test labels outside the training set.
        label_aliases: canonical test label -> training label, applied before that check.
        classes: train on these classes of the corpus only, in this order (EmoBox track 2:
            ``[angry, happy, neutral, sad]``); utterances of other classes are dropped from the
            training, validation and own test splits (counted and logged). ``None``: all classes.
        class_space: train on a named label set instead (:data:`emorl.labels.NAMED_LABEL_SETS`,
            e.g. ``emotionthinker``): its classes, in its order, are the options; every class of
            the corpus (after ``label_aliases``) must be one of them, and the others simply have
            no utterances (UA averages over the classes with support). Not with ``classes``.
        bucket_by_length: batch clips of similar length together (less padding).
        limit_per_split: keep at most this many rows per split (quick runs, smoke tests).
        strict_audio: raise on an undecodable clip instead of logging and skipping it.
        max_skip_share: a training epoch that skips more than this share of its clips (undecodable)
            says so once, with the counts; one that loads no clip at all stops the run
            (:mod:`emorl.data.skips`).
        decode_audio: ``auto`` decodes clips only when the model needs waveforms (a model with
            ``needs_waveforms = False``, e.g. a probe reading cached features, gets undecoded
            items); ``always`` decodes every clip.
        seed: seeds the validation split and the shuffling.
        predict_path: what ``emorl predict`` runs on: a folder of audio files, a JSONL manifest
            or a list of paths (:mod:`emorl.data.folder`); ``None``: the test sets.
        label_names: the class names of a model that predicts without a training corpus
            (``data_dir: null``, only with ``predict_path``); ``emorl predict --ckpt_path CKPT``
            without a config takes them from the checkpoint.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        fold: int = 1,
        test_sets: dict[str, TestSet] | None = None,
        include_own_test: bool = True,
        batch_size: int = 16,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        sample_rate: int = TARGET_SAMPLE_RATE,
        max_seconds: float | None = 30.0,
        duration_mode: Literal["skip", "truncate", "keep"] = "skip",
        val_fraction: float = 0.1,
        val_group_by: Literal["utterance", "speaker"] = "utterance",
        unknown_test_labels: Literal["drop", "error"] = "drop",
        label_aliases: dict[str, str] | None = None,
        classes: list[str] | None = None,
        bucket_by_length: bool = False,
        limit_per_split: int | None = None,
        strict_audio: bool = False,
        max_skip_share: float = 0.05,
        decode_audio: Literal["auto", "always"] = "auto",
        seed: int = 0,
        predict_path: str | None = None,
        class_space: str | None = None,
        label_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.test_specs: dict[str, TestSet] = {}
        self.datasets: dict[str, EmotionDataset] = {}
        self.test_names: list[str] = []
        self.dropped_counts: dict[str, Counter] = {}
        self.epoch_skips = EpochSkips()
        self.duration = DurationPolicy(max_seconds, duration_mode)
        if data_dir is None:  # predicting with a checkpoint's classes, no corpus
            if not predict_path or not label_names:
                raise EmorlError("data.data_dir is not set, give a prepared corpus (--data.data_dir DIR), or "
                                 "predict clips with a checkpoint's classes (--data.predict_path CLIPS --ckpt_path CKPT)")
            self.corpus = None
            self._label_set = LabelSet("checkpoint", tuple(label_names), {c: c for c in label_names})
            return
        self.corpus = load_prepared_corpus(data_dir)
        if fold not in self.corpus.folds:
            raise ManifestError(f"{data_dir}: fold {fold} does not exist; folds are {self.corpus.folds}")
        self._label_set = self.corpus.label_set
        if classes is not None:
            full = self.corpus.label_set
            unknown = [c for c in classes if c not in full]
            if unknown or not classes or len(set(classes)) != len(classes):
                raise UnknownLabelError(
                    f"data.classes {list(classes)} must be distinct classes of {data_dir}'s label set "
                    f"{list(full.classes)}; not there: {unknown}"
                )
            self._label_set = LabelSet(
                full.name, tuple(classes), {raw: c for raw, c in full.raw_map.items() if c in classes}
            )
        if class_space is not None:
            self._label_set = self._class_space(class_space, classes, label_aliases or {})
        if include_own_test:
            self.test_specs[self.corpus.name] = TestSet(str(data_dir), fold, "test")
        for name, spec in (test_sets or {}).items():
            self.test_specs[name] = spec if isinstance(spec, TestSet) else TestSet(**spec)

    def _class_space(self, name: str, classes, aliases: Mapping[str, str]) -> LabelSet:
        if classes is not None:
            raise ValueError("data.classes and data.class_space are exclusive: choose one")
        space, full = get_named_label_set(name), self.corpus.label_set
        outside = sorted({aliases.get(c, c) for c in full.classes} - set(space.classes))
        if outside:
            raise UnknownLabelError(
                f"data.class_space {name!r} {list(space.classes)} lacks the corpus's classes {outside}; "
                "map them onto its classes with label_aliases"
            )
        return LabelSet(space.name, space.classes, {raw: aliases.get(c, c) for raw, c in full.raw_map.items()})

    # -- what models need before setup() --------------------------------------------------------
    @property
    def label_set(self) -> LabelSet:
        """The training label set: the corpus's, or its ``classes`` subset."""
        return self._label_set

    @property
    def class_names(self) -> list[str]:
        """The training label set, in class-id order (linked to every model's ``class_names``)."""
        return list(self.label_set.classes)

    # -- building datasets ------------------------------------------------------------------------
    def _label_ids(self, rows: list[dict], set_name: str, strict: bool) -> tuple[list[dict], list[int]]:
        aliases = self.hparams.label_aliases or {}
        kept, ids, dropped, excluded = [], [], Counter(), Counter()
        own = set_name in ("train", "valid") or set_name == self.corpus.name
        for row in rows:
            label = aliases.get(row["label"], row["label"])
            if label not in self.label_set:
                if own and self.hparams.classes is not None and label in self.corpus.label_set:
                    excluded[label] += 1  # a class of the corpus left out by data.classes
                    continue
                if strict or self.hparams.unknown_test_labels == "error":
                    raise UnknownLabelError(
                        f"{set_name}: utterance {row['key']} has label {row['label']!r}, which is not "
                        f"in the training label set {self.class_names}; add a label_aliases entry "
                        "or set unknown_test_labels: drop"
                    )
                dropped[row["label"]] += 1
                continue
            kept.append(row)
            ids.append(self.label_set.index(label))
        if excluded:
            log.info("%s: %d utterances of classes outside data.classes %s left out: %s",
                     set_name, sum(excluded.values()), self.class_names, dict(excluded))
        if dropped:
            self.dropped_counts[set_name] = dropped
            log.warning(
                "%s: dropped %d utterances whose labels are not in the training label set: %s",
                set_name, sum(dropped.values()), dict(dropped),
            )
        return kept, ids

    def _dataset(self, rows: list[dict], corpus: PreparedCorpus, name: str, strict: bool) -> EmotionDataset:
        kept = [r for r in rows if self.duration.keeps(float(r.get("length") or 0.0))]
        if len(kept) < len(rows):
            log.warning(
                "%s: %d clips longer than %s s skipped (duration_mode=skip)",
                name, len(rows) - len(kept), self.duration.max_seconds,
            )
        if self.hparams.limit_per_split:
            kept = kept[: self.hparams.limit_per_split]
        kept, ids = self._label_ids(kept, name, strict)
        return EmotionDataset(
            kept, ids, corpus, self.duration, self.hparams.sample_rate, self.hparams.strict_audio
        )

    def _test_rows(self, spec: TestSet) -> tuple[list[dict], PreparedCorpus]:
        corpus = self.corpus if Path(spec.path) == Path(self.hparams.data_dir) else load_prepared_corpus(spec.path)
        if spec.split == "all":
            return corpus.rows(), corpus
        return corpus.split(spec.fold, spec.split), corpus

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if stage == "predict" and hp.predict_path:
            return  # the clips of predict_path, not the test sets (no corpus needed)
        if self.corpus is None:
            raise EmorlError(f"stage {stage} needs a prepared corpus, give --data.data_dir DIR")
        if stage in (None, "fit", "validate") and "train" not in self.datasets:
            train = self.corpus.split(hp.fold, "train")
            valid = self.corpus.split(hp.fold, "valid")
            if not train:
                raise ManifestError(f"{self.corpus.root}: fold {hp.fold} has no training utterances")
            if not valid:
                train, valid = split_train_valid(train, hp.val_fraction, hp.val_group_by, hp.seed)
            self.datasets["train"] = self._dataset(train, self.corpus, "train", strict=True)
            self.datasets["valid"] = self._dataset(valid, self.corpus, "valid", strict=True)
        if stage in (None, "test", "predict") and not self.test_names:
            for name, spec in self.test_specs.items():
                rows, corpus = self._test_rows(spec)
                dataset = self._dataset(rows, corpus, name, strict=False)
                if not len(dataset):  # no table at all would follow, and the run would end with status 0
                    raise EmorlError(
                        f"test set {name} ({spec.path}, fold {spec.fold}, split {spec.split}) has no clips "
                        f"({len(rows)} rows before the duration and label filters), choose another fold or "
                        "split, or check the corpus with `emorl data check`")
                self.datasets[f"test/{name}"] = dataset
                self.test_names.append(name)

    # -- loaders ----------------------------------------------------------------------------------
    def _model(self):
        return self.trainer.lightning_module if self.trainer is not None else None

    def _collate(self) -> Callable:
        return getattr(self._model(), "collate_fn", None) or collate_waves

    def needs_waveforms(self) -> bool:
        """Whether loaders decode audio: yes unless the model says it does not need waveforms."""
        if self.hparams.decode_audio == "always":
            return True
        model = self._model()
        if getattr(model, "collate_fn", None) is None:
            return True  # collate_waves would decode every item anyway
        return bool(getattr(model, "needs_waveforms", True))

    def _loader(self, dataset: EmotionDataset, train: bool) -> DataLoader:
        hp = self.hparams
        dataset.decode_audio = self.needs_waveforms()
        batch_size = hp.batch_size if train else (hp.eval_batch_size or hp.batch_size)
        common = dict(batch_size=batch_size, num_workers=hp.num_workers, persistent_workers=hp.num_workers > 0,
                      collate_fn=self._collate())
        if train:
            sampler = (LengthBucketSampler(dataset.lengths(), batch_size, shuffle=True, seed=hp.seed)
                       if hp.bucket_by_length else EpochShuffleSampler(dataset, seed=hp.seed))
            # a generator of its own: worker seeds never draw on the global RNG, so a resumed run
            # continues the interrupted run's random stream exactly
            common["collate_fn"] = CountingCollate(common["collate_fn"])  # skipped clips counted per epoch
            loader = ResumableDataLoader(dataset, sampler=sampler, generator=torch.Generator().manual_seed(hp.seed),
                                         **common)
            loader.progress = self._train_progress
            return loader
        sampler = None
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            sampler = EvaluationShardSampler(dataset, dist.get_world_size(), dist.get_rank())
            if len(sampler) == 0 and self.trainer is not None and self.trainer.lightning_module is not None:
                # a set with fewer clips than ranks leaves this rank none: Lightning refuses that unless told
                self.trainer.lightning_module.allow_zero_length_dataloader_with_multiple_devices = True
        return DataLoader(dataset, shuffle=False, sampler=sampler, **common)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches: take out the count of skipped clips (:mod:`emorl.data.skips`); a batch
        none of whose clips loaded reaches the model as ``None``. At an epoch's last batch, stop the
        run when no clip of the epoch loaded, or warn when too many were skipped."""
        counted = take_count(batch)
        if counted is None:
            return batch
        batch, clips, skipped = counted
        trainer = self.trainer
        epoch = trainer.current_epoch if trainer is not None else 0
        if epoch != self.epoch_skips.epoch:
            self.epoch_skips = EpochSkips(epoch=epoch)
        self.epoch_skips.add(clips, skipped)
        last = trainer.num_training_batches if trainer is not None else float("inf")
        if self.epoch_skips.batches >= last:
            dataset = self.datasets["train"]
            warning = epoch_verdict(self.epoch_skips, str(self.corpus.root), self.hparams.max_skip_share,
                                    lambda: failure_reasons(dataset))
            if warning:
                log.warning(warning)
        return batch

    def _train_progress(self) -> tuple[int, int]:
        loop = self.trainer.fit_loop
        return loop.epoch_progress.current.processed, loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["valid"], train=False)

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(self.datasets[f"test/{name}"], train=False) for name in self.test_names]

    @property
    def predict_names(self) -> list[str]:
        """Names of the predict loaders: the ``predict_path`` (its stem), else the test sets."""
        if self.hparams.predict_path:
            return [Path(self.hparams.predict_path).stem or "predict"]
        return self.test_names

    def predict_dataloader(self) -> list[DataLoader]:
        hp = self.hparams
        if not hp.predict_path:
            return self.test_dataloader()
        from emorl.data.folder import AudioFolderDataset

        dataset = AudioFolderDataset(hp.predict_path, hp.sample_rate, self.duration)
        return [DataLoader(dataset, batch_size=hp.eval_batch_size or hp.batch_size, shuffle=False,
                           num_workers=hp.num_workers, collate_fn=self._collate())]

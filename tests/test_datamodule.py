import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from emorl.data.datamodule import EmoDataModule, TestSet
from emorl.data.dataset import collate_waves
from emorl.data.manifest import ManifestError
from emorl.data.sampling import LengthBucketSampler, padding_ratio, split_train_valid
from emorl.labels import UnknownLabelError
from tests.corpus_factory import make_tiny_corpus, tone


@pytest.fixture
def corpus(tmp_path):
    return make_tiny_corpus(tmp_path / "main")


def test_class_names_come_from_the_prepared_corpus(corpus):
    dm = EmoDataModule(str(corpus.root))
    assert dm.class_names == ["neutral", "happy", "sad", "angry"]


def test_missing_fold_and_folder_are_clear_errors(corpus, tmp_path):
    with pytest.raises(ManifestError, match="fold 3 does not exist"):
        EmoDataModule(str(corpus.root), fold=3)
    with pytest.raises(ManifestError, match="not a prepared corpus"):
        EmoDataModule(str(tmp_path / "nowhere"))


def test_train_batches_are_padded_waveforms_with_label_ids(corpus):
    dm = EmoDataModule(str(corpus.root), batch_size=4, val_fraction=0.25)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["wave"].shape[0] == 4
    assert batch["wave"].shape[1] == int(batch["wave_lengths"].max())
    for i in range(len(batch["key"])):
        row = batch["row"][i]
        assert batch["label"][i] == dm.class_names.index(row["label"])
        n = int(batch["wave_lengths"][i])
        assert n == int(round(row["length"] * 16_000))
        assert torch.all(batch["wave"][i, n:] == 0)
    # 4 speakers x 4 labels x 2 reps = 32 non-test rows; 25 % to validation, stratified by label
    assert len(dm.datasets["train"]) + len(dm.datasets["valid"]) == 32
    valid_labels = [r["label"] for r in dm.datasets["valid"].rows]
    assert sorted(set(valid_labels)) == sorted(dm.class_names)
    assert {valid_labels.count(label) for label in dm.class_names} == {2}


def test_validation_split_is_seeded_and_speaker_grouping_holds_out_speakers(corpus):
    rows = corpus.split(1, "train")
    a = split_train_valid(rows, 0.25, "utterance", seed=3)
    b = split_train_valid(rows, 0.25, "utterance", seed=3)
    c = split_train_valid(rows, 0.25, "utterance", seed=4)
    assert [r["key"] for r in a[1]] == [r["key"] for r in b[1]]
    assert [r["key"] for r in a[1]] != [r["key"] for r in c[1]]
    train, valid = split_train_valid(rows, 0.25, "speaker", seed=0)
    assert {r["speaker"] for r in train}.isdisjoint({r["speaker"] for r in valid})
    assert len(valid) == 8
    with pytest.raises(ValueError, match="val_fraction"):
        split_train_valid(rows, 1.5)


def test_a_committed_valid_split_is_used_as_is(tmp_path):
    corpus = make_tiny_corpus(tmp_path, with_valid=True)
    dm = EmoDataModule(str(corpus.root))
    dm.setup("fit")
    assert {r["speaker"] for r in dm.datasets["valid"].rows} == {"s1"}
    assert "s1" not in {r["speaker"] for r in dm.datasets["train"].rows}


def test_named_test_sets_and_the_cross_corpus_label_rule(corpus, tmp_path, caplog):
    other = make_tiny_corpus(tmp_path / "other", name="other", labels=("neutral", "calm", "angry"))
    dm = EmoDataModule(
        str(corpus.root), test_sets={"other": TestSet(str(other.root), split="all")}, eval_batch_size=64
    )
    with caplog.at_level(logging.WARNING):
        dm.setup("test")
    assert dm.test_names == ["tiny", "other"]
    loaders = dm.test_dataloader()
    assert len(loaders) == 2
    other_rows = dm.datasets["test/other"].rows
    # calm is not a training class: dropped, counted and logged
    assert {r["label"] for r in other_rows} == {"neutral", "angry"}
    assert dm.dropped_counts["other"] == {"calm": 10}
    assert "dropped 10 utterances" in caplog.text
    batch = next(iter(loaders[1]))
    assert [dm.class_names[i] for i in batch["label"]] == [r["label"] for r in batch["row"]]

    aliased = EmoDataModule(
        str(corpus.root), test_sets={"other": {"path": str(other.root), "split": "all"}},
        include_own_test=False, label_aliases={"calm": "neutral"},
    )
    aliased.setup("test")
    assert aliased.test_names == ["other"]
    assert len(aliased.datasets["test/other"]) == 30
    strict = EmoDataModule(
        str(corpus.root), test_sets={"other": TestSet(str(other.root), split="all")},
        unknown_test_labels="error",
    )
    with pytest.raises(UnknownLabelError, match="'calm'.*label_aliases"):
        strict.setup("test")


def test_duration_policy_skips_long_clips_from_the_manifest(tmp_path):
    corpus = make_tiny_corpus(tmp_path, lengths=(0.5, 2.5))
    dm = EmoDataModule(str(corpus.root), max_seconds=2.0, duration_mode="skip")
    dm.setup("test")
    assert all(r["length"] <= 2.0 for r in dm.datasets["test/tiny"].rows)
    truncating = EmoDataModule(str(corpus.root), max_seconds=2.0, duration_mode="truncate")
    truncating.setup("test")
    batch = next(iter(truncating.test_dataloader()[0]))
    assert int(batch["wave_lengths"].max()) == 32_000


def test_bad_clips_are_logged_and_skipped_not_fatal(corpus, caplog):
    rows = corpus.split(1, "test")
    bad = corpus.resolve_wav(rows[0]["wav"])
    bad.write_bytes(b"RIFF....not audio at all")
    nan_clip = corpus.resolve_wav(rows[1]["wav"])
    sf.write(nan_clip, np.full(8000, np.nan, dtype=np.float32), 16_000, subtype="FLOAT")
    dm = EmoDataModule(str(corpus.root), eval_batch_size=64)
    dm.setup("test")
    with caplog.at_level(logging.WARNING):
        batch = next(iter(dm.test_dataloader()[0]))
    assert len(batch["key"]) == len(rows) - 2
    assert sorted(dm.datasets["test/tiny"].failed_keys) == sorted([rows[0]["key"], rows[1]["key"]])
    assert rows[0]["key"] in caplog.text and str(bad) in caplog.text
    strict = EmoDataModule(str(corpus.root), eval_batch_size=64, strict_audio=True)
    strict.setup("test")
    with pytest.raises(Exception, match="cannot decode"):
        next(iter(strict.test_dataloader()[0]))


def test_collate_of_only_bad_items_is_none():
    assert collate_waves([None, None]) is None


def test_model_collate_fn_is_used(corpus):
    class FakeTrainer:
        class lightning_module:
            @staticmethod
            def collate_fn(items):
                return {"n": len(items)}

    dm = EmoDataModule(str(corpus.root), eval_batch_size=3)
    dm.trainer = FakeTrainer()
    dm.setup("test")
    assert next(iter(dm.test_dataloader()[0])) == {"n": 3}


def test_length_bucketing_cuts_padding_and_is_deterministic():
    rng = np.random.default_rng(0)
    lengths = rng.uniform(0.5, 12.0, size=400)
    sampler = LengthBucketSampler(lengths, batch_size=8, seed=1)
    first = list(sampler)
    assert sorted(first) == list(range(400))
    random_order = rng.permutation(400)
    assert padding_ratio(lengths, 8, first) < 0.25 * padding_ratio(lengths, 8, random_order)
    again = LengthBucketSampler(lengths, batch_size=8, seed=1)
    assert list(again) == first
    assert list(again) != first  # the next epoch reshuffles


def test_bucketed_training_loader(corpus):
    dm = EmoDataModule(str(corpus.root), batch_size=4, bucket_by_length=True)
    dm.setup("fit")
    keys = [k for batch in dm.train_dataloader() for k in batch["key"]]
    assert sorted(keys) == sorted(r["key"] for r in dm.datasets["train"].rows)


def test_prepared_corpus_metadata_round_trip(corpus):
    meta = json.loads((corpus.root / "corpus.json").read_text())
    assert meta["corpus"] == "tiny" and meta["folds"] == [1]
    assert len(corpus.rows()) == 40
    assert tone(100, 0.1).shape == (1600,)


def test_evaluation_sets_are_sharded_without_repeats_under_ddp(corpus, monkeypatch):
    """Every test clip is seen exactly once over the ranks (no DistributedSampler padding)."""
    import torch.distributed as dist

    seen = []
    for rank in range(3):
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_world_size", lambda group=None: 3)
        monkeypatch.setattr(dist, "get_rank", lambda group=None, r=rank: r)
        dm = EmoDataModule(str(corpus.root), eval_batch_size=2)
        dm.setup("test")
        seen += [k for batch in dm.test_dataloader()[0] for k in batch["key"]]
    assert len(dm.datasets["test/tiny"]) == 8  # not divisible by 3: padding would repeat one clip
    assert sorted(seen) == sorted(r["key"] for r in dm.datasets["test/tiny"].rows)


class _NoWaveModel:
    """A stand-in LightningModule that reads features elsewhere: it needs no waveforms."""

    needs_waveforms = False

    @staticmethod
    def collate_fn(items):
        return items


def test_a_model_that_needs_no_waveforms_gets_undecoded_items(corpus, monkeypatch):
    import emorl.data.dataset as dataset_module

    calls = []
    real = dataset_module.load_audio
    monkeypatch.setattr(dataset_module, "load_audio", lambda *a, **k: calls.append(a) or real(*a, **k))

    class FakeTrainer:
        lightning_module = _NoWaveModel()

    dm = EmoDataModule(str(corpus.root), eval_batch_size=4)
    dm.trainer = FakeTrainer()
    dm.setup("test")
    items = next(iter(dm.test_dataloader()[0]))
    assert len(items) == 4 and calls == []
    assert all(item["wave"] is None and item["row"]["key"] == item["key"] for item in items)
    decoded = items[0]["decode"]()  # a collator can still decode a clip it cannot serve
    assert len(calls) == 1 and decoded["key"] == items[0]["key"] and len(decoded["wave"]) > 0
    # clips a cache fill found undecodable are dropped without another try
    dm.datasets["test/tiny"].skip_keys.add(items[1]["key"])
    assert dm.datasets["test/tiny"][1] is None
    # collate_waves decodes undecoded items; decode_audio: always decodes in the dataset
    assert collate_waves(items[:2])["wave"].shape[0] == 2
    always = EmoDataModule(str(corpus.root), eval_batch_size=4, decode_audio="always")
    always.trainer = FakeTrainer()
    always.setup("test")
    assert all(item["wave"] is not None for item in next(iter(always.test_dataloader()[0])))


def test_classes_restrict_the_training_label_set(corpus, caplog):
    dm = EmoDataModule(str(corpus.root), classes=["sad", "happy"], val_fraction=0.25)
    assert dm.class_names == ["sad", "happy"]
    with caplog.at_level(logging.INFO):
        dm.setup()
    for name in ("train", "valid", "test/tiny"):
        dataset = dm.datasets[name]
        assert dataset.rows and {r["label"] for r in dataset.rows} == {"sad", "happy"}
        assert dataset.label_ids == [dm.class_names.index(r["label"]) for r in dataset.rows]
    assert len(dm.datasets["train"]) + len(dm.datasets["valid"]) == 16
    assert "left out" in caplog.text
    with pytest.raises(UnknownLabelError, match="calm"):
        EmoDataModule(str(corpus.root), classes=["sad", "calm"])


def test_a_selected_test_set_without_clips_is_an_error_not_an_empty_table(tmp_path):
    from emorl.errors import EmorlError

    corpus = make_tiny_corpus(tmp_path / "c", test_speakers=())  # fold 1's test split is empty
    data = EmoDataModule(str(corpus.root), batch_size=2)
    data.setup("fit")  # training needs no test set
    with pytest.raises(EmorlError, match=r"test set tiny \(.*, fold 1, split test\) has no clips \(0 rows"):
        data.setup("test")

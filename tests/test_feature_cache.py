"""The on-disk feature cache: extract once, reuse everywhere, invalidate on new audio or new weights."""

import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from emorl import tiny_models
from emorl.data.datamodule import EmoDataModule
from emorl.upstreams import Upstream, UpstreamLoader, UpstreamOutput
from emorl.upstreams.cache import (
    CachedFeatureCollator,
    FeatureCache,
    dataset_clip_ids,
    item_key,
)
from emorl.upstreams.hf import HFUpstream
from tests.corpus_factory import make_tiny_corpus


class CountingUpstream(Upstream):
    """Wraps an upstream and counts forwards and clips."""

    def __init__(self, inner: Upstream) -> None:
        super().__init__()
        self.inner = inner
        self.name, self.identity = inner.name, inner.identity
        self.num_layers, self.hidden_dim = inner.num_layers, inner.hidden_dim
        self.forwards = 0
        self.clips = 0

    def forward(self, wave, wave_lengths) -> UpstreamOutput:
        self.forwards += 1
        self.clips += len(wave)
        return self.inner(wave, wave_lengths)


class CountingFactory:
    """A lazy upstream source (loads once, like UpstreamLoader) that records whether it was called."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.calls = 0
        self.upstream: CountingUpstream | None = None

    def __call__(self) -> CountingUpstream:
        self.calls += 1
        if self.upstream is None:
            self.upstream = CountingUpstream(HFUpstream(self.path))
        return self.upstream

    @property
    def clips(self) -> int:
        return self.upstream.clips if self.upstream else 0


@pytest.fixture()
def corpus(tmp_path):
    return make_tiny_corpus(tmp_path / "corpus", speakers=("s1", "s2", "s3"), per_speaker_label=1,
                            test_speakers=("s3",))


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory) -> Path:
    return tiny_models.build_tiny("wavlm-large", tmp_path_factory.mktemp("cache_models") / "wavlm")


def _datasets(corpus):
    dm = EmoDataModule(str(corpus.root), val_fraction=0.25)
    dm.setup()
    return [dm.datasets["train"], dm.datasets["valid"], dm.datasets[f"test/{corpus.name}"]]


def _fill_all(cache, datasets, source, batch_size=1):
    index = {}
    for dataset in datasets:
        index.update(cache.fill(dataset, source, batch_size=batch_size))
    return index


def test_first_pass_extracts_each_clip_once_second_pass_none(tmp_path, corpus, tiny_wavlm):
    datasets = _datasets(corpus)
    total = sum(len(d) for d in datasets)
    assert total == 12
    identity = HFUpstream(tiny_wavlm).identity

    first = CountingFactory(tiny_wavlm)
    cache = FeatureCache(tmp_path / "cache", identity)
    index = _fill_all(cache, datasets, first)
    assert first.calls >= 1 and first.upstream.forwards == total and first.clips == total
    assert len(index) == total and all(cache.has(cid) for cid in index.values())
    assert (cache.directory / "meta.json").is_file()
    assert not list(cache.directory.rglob("*.tmp"))

    # a new cache object (a new run, another fold) over the same folder: the upstream never loads
    second = CountingFactory(tiny_wavlm)
    again = FeatureCache(tmp_path / "cache", identity)
    assert again.directory == cache.directory
    assert _fill_all(again, datasets, second) == index
    assert second.calls == 0

    # the cached features are the upstream's last layer over the clip's valid frames
    dataset = datasets[0]
    item = dataset[0]
    stored = again.load(index[item_key(item["row"])])
    direct = HFUpstream(tiny_wavlm)(torch.from_numpy(item["wave"])[None], torch.tensor([len(item["wave"])]))
    assert stored.shape == (int(direct.lengths), 32)
    torch.testing.assert_close(stored, direct.hidden_states[-1][0])


def test_batched_extraction_counts_clips_not_batches(tmp_path, corpus, tiny_wavlm):
    datasets = _datasets(corpus)
    factory = CountingFactory(tiny_wavlm)
    cache = FeatureCache(tmp_path / "cache", HFUpstream(tiny_wavlm).identity)
    _fill_all(cache, datasets, factory, batch_size=4)
    assert factory.clips == 12 and factory.upstream.forwards < 12


def test_a_changed_audio_file_is_extracted_again(tmp_path, corpus, tiny_wavlm):
    datasets = _datasets(corpus)
    identity = HFUpstream(tiny_wavlm).identity
    cache = FeatureCache(tmp_path / "cache", identity)
    before = _fill_all(cache, datasets, CountingFactory(tiny_wavlm))

    row = datasets[0].rows[0]
    path = datasets[0].corpus.resolve_wav(row["wav"])
    time.sleep(0.01)
    sf.write(path, (0.2 * np.random.default_rng(0).standard_normal(12_000)).astype(np.float32), 16_000)
    factory = CountingFactory(tiny_wavlm)
    after = _fill_all(FeatureCache(tmp_path / "cache", identity), datasets, factory)
    assert factory.clips == 1
    changed = [k for k in before if before[k] != after[k]]
    assert changed == [item_key(row)]


def test_new_weights_invalidate_everything(tmp_path, corpus):
    datasets = _datasets(corpus)
    model = tiny_models.build_tiny("wavlm-large", tmp_path / "model", seed=0)
    cache = FeatureCache(tmp_path / "cache", HFUpstream(model).identity)
    _fill_all(cache, datasets, CountingFactory(model))

    tiny_models.build_tiny("wavlm-large", tmp_path / "model", seed=1)  # same folder, other weights
    factory = CountingFactory(model)
    new = FeatureCache(tmp_path / "cache", HFUpstream(model).identity)
    assert new.directory != cache.directory
    _fill_all(new, datasets, factory)
    assert factory.clips == 12


def test_layer_selection_has_its_own_folder(tmp_path, corpus, tiny_wavlm):
    datasets = _datasets(corpus)[:1]
    upstream = HFUpstream(tiny_wavlm)
    every = FeatureCache(tmp_path / "cache", upstream.identity, layer="all")
    first = FeatureCache(tmp_path / "cache", upstream.identity, layer=1)
    last = FeatureCache(tmp_path / "cache", upstream.identity)
    assert len({every.directory, first.directory, last.directory}) == 3
    index = _fill_all(every, datasets, upstream)
    _fill_all(first, datasets, upstream)
    cid = next(iter(index.values()))
    stacked = every.load(cid)
    assert stacked.dim() == 3 and stacked.shape[0] == 3 and stacked.shape[2] == 32
    torch.testing.assert_close(first.load(cid), stacked[1])
    half = FeatureCache(tmp_path / "cache", upstream.identity, dtype="float16")
    _fill_all(half, datasets, upstream)
    assert half.load(cid).dtype == torch.float16


def test_truncation_is_part_of_the_clip_id(corpus):
    full = EmoDataModule(str(corpus.root), val_fraction=0.25)
    cut = EmoDataModule(str(corpus.root), val_fraction=0.25, max_seconds=0.6, duration_mode="truncate")
    full.setup("test")
    cut.setup("test")
    ids_full = dataset_clip_ids(full.datasets[f"test/{corpus.name}"])
    ids_cut = dataset_clip_ids(cut.datasets[f"test/{corpus.name}"])
    assert len(ids_full) == len(ids_cut) == 4 and not set(ids_full) & set(ids_cut)


def test_the_collator_serves_batches_from_the_cache(tmp_path, corpus, tiny_wavlm):
    datasets = _datasets(corpus)
    identity = HFUpstream(tiny_wavlm).identity
    cache = FeatureCache(tmp_path / "cache", identity)
    factory = CountingFactory(tiny_wavlm)
    collator = CachedFeatureCollator(cache, factory)
    for dataset in datasets:
        collator.index.update(cache.fill(dataset, factory))
    extracted = factory.clips

    items = [datasets[0][i] for i in range(3)] + [None]
    batch = collator(items)
    assert factory.clips == extracted  # served from disk
    assert batch["features"].shape[0] == 3 and batch["features"].shape[2] == 32
    assert batch["lengths"].tolist() == [cache.load(collator.index[item_key(i["row"])]).shape[0] for i in items[:3]]
    assert batch["label"].tolist() == [i["label"] for i in items[:3]]
    assert collator([None]) is None

    # an item the fill did not see is extracted on the spot, once, and stored
    stray = dict(datasets[0][0], key="stray", row={"key": "stray", "wav": "elsewhere.wav"})
    stray["wave"] = stray["wave"][:8000]
    lazy = CachedFeatureCollator(FeatureCache(tmp_path / "cache", identity), CountingFactory(tiny_wavlm))
    lazy(items[:1] + [stray])
    assert lazy.upstream.clips == 2  # nothing indexed in this collator: both computed ...
    lazy(items[:1] + [stray])
    assert lazy.upstream.clips == 2  # ... and stored


def test_collator_and_loader_pickle_without_the_model(tmp_path, tiny_wavlm):
    loader = UpstreamLoader(tiny_wavlm, device="cpu")
    assert loader.identity == HFUpstream(tiny_wavlm).identity
    loader()
    assert loader.loaded
    collator = CachedFeatureCollator(FeatureCache(tmp_path, loader.identity), loader)
    clone = pickle.loads(pickle.dumps(collator))
    assert not clone.upstream.loaded and clone.upstream.device is None
    assert len(pickle.dumps(collator)) < 10_000


def test_concurrent_writes_leave_one_whole_file(tmp_path):
    cache = FeatureCache(tmp_path, "test-identity")
    tensors = [torch.full((50, 8), float(i)) for i in range(8)]
    threads = [threading.Thread(target=cache.save, args=("ab" * 20, t)) for t in tensors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    loaded = cache.load("ab" * 20)
    assert loaded.shape == (50, 8) and loaded.unique().numel() == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_undecoded_items_are_served_from_the_cache_without_decoding(tmp_path, corpus, tiny_wavlm, monkeypatch):
    import emorl.data.dataset as datamodule

    datasets = _datasets(corpus)
    dataset = datasets[0]
    bad = dataset.corpus.resolve_wav(dataset.rows[1]["wav"])
    bad.write_bytes(b"RIFF....not audio at all")
    cache = FeatureCache(tmp_path / "cache", HFUpstream(tiny_wavlm).identity)
    factory = CountingFactory(tiny_wavlm)
    collator = CachedFeatureCollator(cache, factory)
    for d in datasets:
        collator.index.update(cache.fill(d, factory))
    # the clip that failed to decode during the fill is marked, so an undecoding dataset drops it
    assert dataset.skip_keys == {dataset.rows[1]["key"]}
    extracted = factory.clips

    calls = []
    real = datamodule.load_audio
    monkeypatch.setattr(datamodule, "load_audio", lambda *a, **k: calls.append(a) or real(*a, **k))
    dataset.decode_audio = False
    items = [dataset[i] for i in range(len(dataset))]
    assert items[1] is None and all(item["wave"] is None for i, item in enumerate(items) if i != 1)
    batch = collator(items)
    assert calls == [] and factory.clips == extracted
    assert len(batch["key"]) == len(dataset) - 1

    # a clip whose features were deleted is decoded and extracted on the spot (with a warning)
    cache.path(collator.index[item_key(dataset.rows[0])]).unlink()
    batch = collator([dataset[0], dataset[2]])
    assert len(calls) == 1 and factory.clips == extracted + 1 and len(batch["key"]) == 2
    # one that cannot be decoded any more is left out of the batch, not fatal
    dataset.skip_keys.clear()
    assert collator([dataset[1], dataset[2]])["key"] == [dataset.rows[2]["key"]]
    # the fill itself decodes even when the dataset does not
    fresh = FeatureCache(tmp_path / "other", HFUpstream(tiny_wavlm).identity)
    fresh.fill(dataset, factory)
    assert factory.clips == extracted + 1 + len(dataset) - 1

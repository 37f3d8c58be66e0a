"""A feature cache on disk: a frozen upstream runs once per (upstream, layer selection, clip).

Layout::

    <cache_dir>/<folder>/meta.json                 what the folder holds (identity, layer, dtype)
    <cache_dir>/<folder>/<id[:2]>/<id>.pt          one clip's features, valid frames only

``folder`` is a hash of the upstream's ``identity`` (:mod:`emorl.upstreams.base`; it changes when
the model or its weights change), the layer selection (``last``, an index, or ``all`` hidden states
stacked for a learned weighted sum) and the storage dtype. ``id`` is a hash of the clip's key,
its audio file's size and modification time, the channel, the channel policy
(:data:`emorl.audio.CHANNEL_POLICY`: what a ``channel`` of ``null`` or ``K`` decodes to), the
sample rate and the truncation length, so editing or replacing an audio file, or a change in how
channels are mixed, invalidates its features, while folds and runs of the same corpus share them. A clip file holds a tensor ``(T', D)`` (one layer) or
``(L, T', D)`` (``all``).

Writes go to a temporary file in the same folder and are renamed into place, so concurrent
writers (DataLoader workers, DDP ranks, two runs) never leave a half-written file behind.

:meth:`FeatureCache.fill` extracts every missing clip of an ``EmotionDataset`` (decoding only
those, batched by length), and returns an index from item to clip id that
:class:`CachedFeatureCollator` uses to serve batches without ever running the upstream. Clips
that fail to decode during the fill are added to the dataset's ``skip_keys``, so a dataset that
does not decode (``decode_audio = False``: the collator reads features, not audio) drops them
without trying again. The collator serves undecoded items from the cache and decodes only a clip
the cache lacks (through the item's ``decode``), so training from a filled cache decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from emorl.upstreams.base import DTYPES, LayerSelection, Upstream

log = logging.getLogger(__name__)

CACHE_FORMAT = 1

#: An upstream, or a zero-argument callable that loads one (only called when something is missing).
UpstreamSource = Union[Upstream, Callable[[], Upstream]]


def _sha1(*parts: Any) -> str:
    return hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()


def layer_tag(layer: LayerSelection) -> str:
    if layer in ("last", "all"):
        return str(layer)
    if isinstance(layer, str):
        raise ValueError(f"layer must be 'last', 'all' or an integer, not {layer!r}")
    return f"layer{int(layer)}"


def item_key(row: Mapping[str, Any]) -> tuple[str, str, str]:
    """How the collator recognises a dataset item: (key, manifest wav, channel)."""
    return (str(row["key"]), str(row.get("wav", "")), str(row.get("channel")))


def file_clip_id(
    key: str,
    path: str | os.PathLike,
    channel: Any = None,
    sample_rate: int = 16_000,
    max_samples: int | None = None,
) -> str:
    """Clip id from the audio file's size and modification time (no decoding needed).

    The channel policy is part of it: features cached before the policy changed are not reused.
    """
    from emorl.audio import CHANNEL_POLICY

    stat = Path(path).stat()
    return _sha1("file", key, stat.st_size, stat.st_mtime_ns, channel, CHANNEL_POLICY, sample_rate, max_samples)


def wave_clip_id(key: str, wave: np.ndarray | Tensor) -> str:
    """Clip id from the decoded samples themselves (for items whose file is not known)."""
    array = np.ascontiguousarray(np.asarray(wave, dtype=np.float32))
    return _sha1("wave", key, len(array), hashlib.sha1(array.tobytes()).hexdigest())


def _as_tensor(wave: np.ndarray | Tensor) -> Tensor:
    return wave.float() if isinstance(wave, Tensor) else torch.from_numpy(np.asarray(wave, dtype=np.float32))


class FeatureCache:
    """Per-clip features of one upstream and layer selection, on disk.

    Args:
        root: the cache directory (shared by every upstream; each gets its own folder).
        identity: the upstream's ``identity``.
        layer: ``"last"``, a hidden-state index, or ``"all"``.
        dtype: storage dtype (``float32``; ``float16`` halves the disk, features lose ~3 digits).
    """

    def __init__(
        self, root: str | os.PathLike, identity: str, layer: LayerSelection = "last", dtype: str = "float32"
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"cache dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
        self.root = Path(root)
        self.identity = identity
        self.layer = layer
        self.dtype = dtype
        self.directory = self.root / _sha1(CACHE_FORMAT, identity, layer_tag(layer), dtype)[:20]
        self.extracted = 0  # clips this object ran the upstream for

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.directory)!r}, identity={self.identity!r}, layer={self.layer!r})"

    # -- files ------------------------------------------------------------------------------------
    def path(self, clip_id: str) -> Path:
        return self.directory / clip_id[:2] / f"{clip_id}.pt"

    def has(self, clip_id: str) -> bool:
        return self.path(clip_id).is_file()

    def load(self, clip_id: str) -> Tensor:
        path = self.path(clip_id)
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise RuntimeError(f"feature cache file {path} is unreadable ({err}); delete it to recompute") from err

    def save(self, clip_id: str, features: Tensor) -> Path:
        """Store one clip's features atomically (temporary file, then rename)."""
        path = self.path(clip_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_meta()
        tensor = features.detach().to("cpu", DTYPES[self.dtype]).contiguous().clone()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{clip_id}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(tensor, handle)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def _write_meta(self) -> None:
        meta = self.directory / "meta.json"
        if meta.is_file():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        content = {"format": CACHE_FORMAT, "identity": self.identity, "layer": self.layer, "dtype": self.dtype}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".meta.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=1)
        os.replace(tmp, meta)

    # -- extraction -------------------------------------------------------------------------------
    def extract(
        self,
        upstream: Upstream,
        waves: Sequence[np.ndarray | Tensor],
        clip_ids: Sequence[str],
        batch_size: int = 8,
    ) -> list[Tensor]:
        """Run the upstream over ``waves`` (longest first, ``batch_size`` at a time), store, return."""
        if len(waves) != len(clip_ids):
            raise ValueError("waves and clip_ids differ in length")
        upstream.layer_index(self.layer)  # range check
        device = next(upstream.parameters(), torch.empty(0)).device
        order = sorted(range(len(waves)), key=lambda i: -len(waves[i]))
        results: list[Tensor | None] = [None] * len(waves)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            tensors = [_as_tensor(waves[i]) for i in chunk]
            lengths = torch.tensor([len(t) for t in tensors], dtype=torch.long)
            batch = torch.zeros(len(chunk), int(lengths.max()))
            for row, tensor in enumerate(tensors):
                batch[row, : len(tensor)] = tensor
            with torch.no_grad():
                output = upstream(batch.to(device), lengths.to(device))
                selected = output.select(self.layer)
            for row, i in enumerate(chunk):
                n = int(output.lengths[row])
                feats = selected[row, ..., :n, :]  # (T', D) or (L, T', D)
                self.save(clip_ids[i], feats)
                results[i] = feats.detach().to("cpu", DTYPES[self.dtype]).float()
            self.extracted += len(chunk)
        return results  # type: ignore[return-value]

    def fill(
        self,
        dataset: Any,
        upstream: UpstreamSource,
        batch_size: int = 8,
        num_workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> dict[tuple[str, str, str], str]:
        """Make sure every clip of an ``EmotionDataset`` is cached; return its item -> clip id index.

        Only the missing clips are decoded (shard ``rank`` of ``world_size`` of them: every DDP
        rank extracts its share), in batches of similar length. ``upstream`` may be a callable that
        loads it; it is only called when a clip is missing.
        """
        ids = dataset_clip_ids(dataset)
        index = {item_key(row): cid for row, cid in zip(dataset.rows, ids) if cid is not None}
        missing = [i for i, cid in enumerate(ids) if cid is not None and not self.has(cid)]
        missing = missing[rank::world_size]
        failed = [dataset.rows[i]["key"] for i, cid in enumerate(ids) if cid is None]  # no audio file
        if not missing:
            _mark_failed(dataset, failed)
            return index
        model = upstream if isinstance(upstream, Upstream) else upstream()
        lengths = dataset.lengths() if hasattr(dataset, "lengths") else [0.0] * len(ids)
        missing.sort(key=lambda i: -lengths[i])
        log.info("feature cache %s: extracting %d clips with %s",
                 self.directory, len(missing), getattr(model, "name", model))
        loader = DataLoader(
            _Decoding(dataset, missing), batch_size=batch_size, shuffle=False, num_workers=num_workers,
            collate_fn=_decoded_items,
        )
        position = 0
        for items in loader:
            chunk = missing[position : position + batch_size]
            position += batch_size
            keep = {item_key(item["row"]) for item in items}
            chunk_ids = [ids[i] for i in chunk if item_key(dataset.rows[i]) in keep]
            failed += [dataset.rows[i]["key"] for i in chunk if item_key(dataset.rows[i]) not in keep]
            if items:
                self.extract(model, [item["wave"] for item in items], chunk_ids, batch_size=len(items))
        _mark_failed(dataset, failed)
        return index


class _Decoding(Dataset):
    """Items ``indices`` of a dataset, always decoded (whatever the dataset's ``decode_audio``)."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict | None:
        load = getattr(self.dataset, "load_item", None)
        return load(self.indices[i]) if load is not None else self.dataset[self.indices[i]]


def _mark_failed(dataset: Any, keys: Sequence[str]) -> None:
    """Tell the dataset which clips could not be decoded (it drops them when it does not decode)."""
    if not keys:
        return
    skip = getattr(dataset, "skip_keys", None)
    if skip is not None:
        skip.update(keys)
    log.warning("feature cache: %d clips could not be decoded and are left out: %s%s",
                len(keys), ", ".join(keys[:5]), " ..." if len(keys) > 5 else "")


def _decoded_items(items: Sequence[dict | None]) -> list[dict]:
    return [item for item in items if item is not None]


def dataset_clip_ids(dataset: Any) -> list[str | None]:
    """File-based clip ids of an ``EmotionDataset``'s rows (``None`` where the file is missing)."""
    sample_rate = int(getattr(dataset, "sample_rate", 16_000))
    duration = getattr(dataset, "duration", None)
    max_samples = None
    if duration is not None and duration.mode == "truncate" and duration.max_seconds is not None:
        max_samples = int(math.floor(duration.max_seconds * sample_rate))
    ids: list[str | None] = []
    for row in dataset.rows:
        path = dataset.corpus.resolve_wav(row["wav"])
        try:
            ids.append(file_clip_id(row["key"], path, row.get("channel"), sample_rate, max_samples))
        except OSError:
            ids.append(None)
    return ids


class CachedFeatureCollator:
    """``EmotionDataset`` items -> ``{"features", "lengths", "label", "key"}`` read from the cache.

    ``features`` is ``(B, T, D)`` (one layer) or ``(B, L, T, D)`` (``all``), zero-padded, float32;
    ``lengths`` the valid frames. ``index`` (item -> clip id) is filled by :meth:`FeatureCache.fill`
    before the loaders start. Items may come undecoded (``wave`` ``None``, with a ``decode``
    callable): a cached clip is never decoded. An item that is not cached (not indexed, or its file
    deleted) is decoded if need be and extracted on the spot with ``upstream`` (loaded in this
    process on first need) and stored, with a warning: the fill at the start of a stage should have
    cached it. A clip that cannot be decoded then is dropped from the batch (logged). Picklable for
    DataLoader workers.
    """

    def __init__(self, cache: FeatureCache, upstream: UpstreamSource | None = None, batch_size: int = 8) -> None:
        self.cache = cache
        self.upstream = upstream
        self.batch_size = batch_size
        self.index: dict[tuple[str, str, str], str] = {}

    def _load_upstream(self) -> Upstream:
        if self.upstream is None:
            raise RuntimeError("some features are not cached and the collator was given no upstream to extract them")
        return self.upstream if isinstance(self.upstream, Upstream) else self.upstream()

    @staticmethod
    def _decoded(item: dict) -> dict | None:
        """``item`` with its waveform (decoded now if it came without), ``None`` if undecodable."""
        if item.get("wave") is not None:
            return item
        decode = item.get("decode")
        if decode is None:
            raise RuntimeError(
                f"clip {item['key']} is not in the feature cache and was not decoded, and the item carries "
                "no way to decode it; run the stage again so that setup() extracts it"
            )
        decoded = decode()
        if decoded is None:
            log.warning("feature cache: clip %s is not cached and could not be decoded; left out", item["key"])
        return decoded

    def features(self, items: Sequence[dict]) -> list[Tensor | None]:
        """Features of each item, read from the cache or extracted now; ``None`` for an undecodable clip."""
        items = list(items)
        ids = [self.index.get(item_key(item["row"])) if "row" in item else None for item in items]
        for i, (cid, item) in enumerate(zip(ids, items)):
            if cid is None:  # not indexed: the id comes from the samples themselves
                items[i] = self._decoded(item)
                ids[i] = wave_clip_id(item["key"], items[i]["wave"]) if items[i] is not None else None
        feats: list[Tensor | None] = [
            self.cache.load(cid).float() if cid is not None and self.cache.has(cid) else None for cid in ids
        ]
        missing = []
        for i, (cid, feat) in enumerate(zip(ids, feats)):
            if feat is None and cid is not None:
                items[i] = self._decoded(items[i])
                if items[i] is not None:
                    missing.append(i)
        if missing:
            log.warning(
                "feature cache: %d clips of this batch were not cached; extracting them now (%s)",
                len(missing), ", ".join(items[i]["key"] for i in missing[:3]),
            )
            computed = self.cache.extract(
                self._load_upstream(), [items[i]["wave"] for i in missing], [ids[i] for i in missing], self.batch_size
            )
            for i, tensor in zip(missing, computed):
                feats[i] = tensor
        return feats  # type: ignore[return-value]

    def __call__(self, items: Sequence[dict | None]) -> dict | None:
        items = [item for item in items if item is not None]
        if not items:
            return None
        pairs = [(item, f) for item, f in zip(items, self.features(items)) if f is not None]
        if not pairs:
            return None
        items, feats = [p[0] for p in pairs], [p[1] for p in pairs]
        lengths = torch.tensor([f.shape[-2] for f in feats], dtype=torch.long)
        shape = (len(feats), *feats[0].shape[:-2], max(int(lengths.max()), 1), feats[0].shape[-1])
        batch = torch.zeros(shape, dtype=torch.float32)
        for i, tensor in enumerate(feats):
            batch[i, ..., : tensor.shape[-2], :] = tensor
        return {
            "features": batch,
            "lengths": lengths,
            "label": torch.tensor([item["label"] for item in items], dtype=torch.long),
            "key": [item["key"] for item in items],
        }

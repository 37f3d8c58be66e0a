"""Where ``emorl data import-hf`` reads a Hugging Face dataset from, and what its columns hold.

A SOURCE is one of (:func:`source_kind`):

- ``disk``: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (it holds
  ``dataset_dict.json`` or ``state.json``), opened memory-mapped with ``datasets.load_from_disk``;
- ``folder``: any other folder of parquet / arrow files (the ``datasets`` file-name conventions
  give the splits: ``train-*.parquet``, ``data/test-*.parquet``, ...), streamed;
- ``files``: a parquet / arrow file or a glob of them (one split, ``train``), streamed;
- ``hub``: a Hub id ``owner/name``, loaded through the ``datasets`` cache (memory-mapped Arrow).

Every source opens as ``{split name: Dataset | IterableDataset}`` (:func:`open_source`), read in
batches, so no split ever sits in memory as Python objects. The audio column is read with
``Audio(decode=False)`` (:func:`undecoded`): ``datasets`` decodes audio through torchcodec,
which emorl does not use; emorl decodes the bytes or files itself (:mod:`emorl.audio`).
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

#: Column names tried, in order, when an option does not name the column.
DEFAULT_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "audio": ("audio", "speech", "wav"),
    "label": ("label", "labels", "emotion", "emo", "major_emotion"),
    "speaker": ("speaker", "speaker_id", "spk"),
    "gender": ("gender", "speaker_gender", "sex"),
    "transcript": ("transcript", "transcription", "text", "sentence", "utterance"),
    "key": ("key", "id", "utt_id"),
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FOLD_SPLIT = re.compile(r"^fold_?(\d+)[_.-](train|valid|validation|dev|test)$")
_ROLE = {"train": "train", "training": "train", "valid": "valid", "validation": "valid", "val": "valid",
         "dev": "valid", "test": "test", "testing": "test"}


def source_kind(source: str) -> str:
    """``disk``, ``folder``, ``files`` or ``hub`` (see the module docstring); a clear error otherwise."""
    path = Path(source)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return "disk"
        return "folder"
    if path.is_file() or glob.has_magic(source):
        return "files"
    if _HUB_ID.match(source) and not source.startswith((".", "/")):
        return "hub"
    raise FileNotFoundError(f"source {source} is not a folder, a parquet/arrow file or glob, nor a Hub id "
                            "(owner/name), give a save_to_disk folder, parquet files or a Hub id")


def _data_files(source: str) -> tuple[str, list[str]]:
    """The builder (``parquet`` / ``arrow``) and sorted files of a file or glob."""
    files = sorted(glob.glob(source)) if glob.has_magic(source) else [source]
    if not files:
        raise FileNotFoundError(f"no file matches {source}, check the glob (quote it in the shell)")
    suffixes = {Path(f).suffix.lower() for f in files}
    if suffixes == {".parquet"}:
        return "parquet", files
    if suffixes <= {".arrow"}:
        return "arrow", files
    raise ValueError(f"{source} matches {sorted(suffixes)} files, import-hf reads .parquet or .arrow files")


def cache_folders() -> str:
    """The folders ``datasets`` and the Hub client cache into (named in offline errors)."""
    import datasets
    from huggingface_hub import constants

    return f"{datasets.config.HF_DATASETS_CACHE} and {constants.HF_HUB_CACHE}"


def hub_error(repo: str, err: Exception) -> str:
    """One line saying why a Hub dataset did not load, with what to do about it."""
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    why = " ".join(str(err).split())[:300]
    if offline or "offline" in why.lower() or isinstance(err, ConnectionError):
        return (f"Hub dataset {repo} is not in the datasets cache ({cache_folders()}) and HF_HUB_OFFLINE is set "
                f"or the Hub cannot be reached ({why}), load it once online (unset HF_HUB_OFFLINE) or point "
                "import-hf at a local save_to_disk folder or parquet files")
    return f"cannot load Hub dataset {repo} ({type(err).__name__}: {why}), check the id and --config"


def open_source(source: str, config: str | None = None) -> dict[str, Any]:
    """``{split: Dataset | IterableDataset}`` of a SOURCE (see the module docstring)."""
    import datasets

    kind = source_kind(source)
    if kind == "disk":
        loaded = datasets.load_from_disk(source)
    elif kind == "files":
        builder, files = _data_files(source)
        loaded = datasets.load_dataset(builder, data_files={"train": files}, streaming=True)
    elif kind == "folder":
        try:
            loaded = datasets.load_dataset(str(Path(source).absolute()), streaming=True)
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"{source} holds no parquet/arrow data datasets can read ({err}), give a "
                             "save_to_disk folder or a glob of parquet files") from None
    else:
        try:
            loaded = datasets.load_dataset(source, config)
        except Exception as err:  # datasets raises many types; every one becomes one line
            raise ConnectionError(hub_error(source, err)) from None
    if isinstance(loaded, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return dict(loaded)
    return {"train": loaded}


def num_rows(dataset: Any) -> int | None:
    """Rows of a split when known without reading it (None for most streamed sources)."""
    rows = getattr(dataset, "num_rows", None)
    if isinstance(rows, int):
        return rows
    splits = getattr(getattr(dataset, "info", None), "splits", None) or {}
    split = splits.get(str(getattr(dataset, "split", "") or "")) if hasattr(splits, "get") else None
    return getattr(split, "num_examples", None) or None


def resolve_column(columns: Sequence[str], given: str | None, role: str, required: bool) -> str | None:
    """The column playing ``role``: the one named by ``--<role>-column``, else a conventional name.

    A named column that does not exist, or a required role that no column plays, is an error
    listing the dataset's columns.
    """
    option = f"--{role}-column"
    if given:
        if given not in columns:
            raise ValueError(f"column {given!r} ({option}) is not in the dataset, its columns are "
                             f"{list(columns)}, name one of them with {option}")
        return given
    for candidate in DEFAULT_COLUMNS.get(role, ()):
        if candidate in columns:
            return candidate
    if required:
        raise ValueError(f"no {role} column in the dataset (looked for {list(DEFAULT_COLUMNS[role])}), its "
                         f"columns are {list(columns)}, name one with {option}")
    return None


def audio_kind(feature: Any, column: str) -> str:
    """How a column holds audio: ``audio`` (an Audio feature), ``path``, ``bytes`` or ``struct``."""
    import datasets

    if isinstance(feature, datasets.Audio):
        return "audio"
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return "path"
    if isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary"):
        return "bytes"
    if isinstance(feature, dict) and ("bytes" in feature or "path" in feature):
        return "struct"
    raise ValueError(f"column {column!r} holds {feature}, not audio files (Audio, a path, bytes or a "
                     "{bytes, path} struct), name the audio column with --audio-column")


def undecoded(dataset: Any, column: str) -> Any:
    """The dataset with its Audio column read as ``{bytes, path}`` (no torchcodec decoding)."""
    import datasets

    return dataset.cast_column(column, datasets.Audio(decode=False))


def split_role(name: str) -> tuple[int, str] | None:
    """``(fold, split)`` a split name stands for: ``train``/``validation``/``test`` are fold 1's,
    ``fold_K_train`` (what ``export-hf`` writes) fold K's; None for any other name."""
    name = name.strip().lower()
    if name in _ROLE:
        return 1, _ROLE[name]
    match = _FOLD_SPLIT.match(name)
    return (int(match.group(1)), _ROLE[match.group(2)]) if match else None


def parse_splits(text: str | None) -> dict[str, tuple[int, str] | None]:
    """``--splits a,b=test,c=fold_2_train`` -> ``{name: role or None}``, None = the name's own role."""
    if not text:
        return {}
    chosen: dict[str, tuple[int, str] | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, role = item.partition("=")
        if role and split_role(role) is None:
            raise ValueError(f"--splits {item}: {role!r} is not train, valid, test or fold_K_<split>, "
                             "write NAME=train|valid|test")
        chosen[name.strip()] = split_role(role) if role else None
    return chosen


def natural_key(text: str) -> tuple:
    """Sort key that puts ``session2`` before ``session10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text))

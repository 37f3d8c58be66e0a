"""The prepared-corpus format: JSONL manifests, the label map and the folds.

A prepared corpus is a folder::

    OUT_DIR/
      corpus.json                       what the folder holds (corpus name, folds, label classes)
      <corpus>.jsonl                    every utterance, one JSON object a line
      label_map.json                    raw label -> canonical label, in class order (EmoBox style)
      fold_K/<corpus>_{train,valid,test}_fold_K.jsonl

Each manifest row carries EmoBox's fields (``key``, ``dataset``, ``wav``, ``length``,
``sample_rate``, ``emo``) plus ``label`` (the canonical emotion) and, where the corpus has them,
``speaker``, ``gender`` and ``transcript``. ``wav`` is absolute, or relative to the corpus's
``audio_root`` (``corpus.json``), or else to the folder of ``<corpus>.jsonl``.

Optional, added after preparation: ``prosody`` (``emorl data prosody``, :mod:`emorl.prosody`):
the clip's measures, bins and caption, in ``<corpus>.jsonl`` and the same in every fold file
(:func:`update_rows` keeps them in step); the corpus's bin thresholds are in ``corpus.json`` under
``"prosody"`` (:attr:`PreparedCorpus.prosody`). Manifests without it load as before.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from emorl.labels import LabelSet, check_map_classes, validate_label_map

REQUIRED_FIELDS: tuple[str, ...] = ("key", "wav", "emo", "label")
SPLITS: tuple[str, ...] = ("train", "valid", "test")


class ManifestError(ValueError):
    """A manifest file or line that cannot be used; the message names the file and line."""


def read_manifest(path: str | os.PathLike, required: Sequence[str] = REQUIRED_FIELDS) -> list[dict]:
    """Read a JSONL manifest, checking every line.

    Blank lines are skipped. A line that is not a JSON object, lacks a required field, repeats
    a key, or holds a field of the wrong type (:func:`field_error`) raises :class:`ManifestError`
    naming ``file:line``, the field and what is expected.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    rows: list[dict] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ManifestError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            missing = [name for name in required if name not in row]
            if missing:
                raise ManifestError(f"{path}:{lineno}: missing field(s) {missing}")
            problem = field_error(row)
            if problem:
                raise ManifestError(f"{path}:{lineno}: {problem}")
            key = row.get("key")
            if "key" in required:
                if not isinstance(key, str) or not key:
                    raise ManifestError(f"{path}:{lineno}: 'key' must be a non-empty string")
                if key in seen:
                    raise ManifestError(f"{path}:{lineno}: key {key!r} already on line {seen[key]}")
                seen[key] = lineno
            rows.append(row)
    return rows


def _is_channel(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


#: field -> (test of a valid value, what is expected); checked on every row that has the field.
FIELD_TYPES: dict[str, tuple[Any, str]] = {
    "wav": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty path string"),
    "label": (lambda v: isinstance(v, str) and bool(v.strip()), "a class name (string)"),
    "channel": (_is_channel, "null (channels averaged) or a 1-based channel number"),
}


def field_error(row: Mapping[str, Any]) -> str | None:
    """What is wrong with the first field of ``row`` that has the wrong type, or None."""
    for name, (valid, expected) in FIELD_TYPES.items():
        if name in row and not valid(row[name]):
            return f"field {name!r} must be {expected}, not {json.dumps(row[name])}"
    return None


def write_manifest(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> int:
    """Write rows as JSONL atomically (a crash never leaves half a file). Returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def fold_path(out_dir: str | os.PathLike, corpus: str, fold: int, split: str) -> Path:
    """Where a fold's split lives: ``OUT_DIR/fold_K/<corpus>_<split>_fold_K.jsonl``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return Path(out_dir) / f"fold_{fold}" / f"{corpus}_{split}_fold_{fold}.jsonl"


@dataclass
class PreparedCorpus:
    """A prepared corpus folder, read back: its rows, label set and fold membership."""

    root: Path
    name: str
    label_set: LabelSet
    folds: list[int]
    audio_root: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def manifest_path(self) -> Path:
        return self.root / f"{self.name}.jsonl"

    def rows(self) -> list[dict]:
        return read_manifest(self.manifest_path)

    def split(self, fold: int, split: str) -> list[dict]:
        """Rows of one split of one fold; an absent split (e.g. no ``valid``) gives ``[]``."""
        if fold not in self.folds:
            raise ManifestError(f"{self.root}: fold {fold} does not exist; folds are {self.folds}")
        path = fold_path(self.root, self.name, fold, split)
        return read_manifest(path) if path.exists() else []

    @property
    def prosody(self) -> dict | None:
        """``corpus.json``'s ``"prosody"`` entry (bin thresholds, summary), or None if not measured."""
        return self.extra.get("prosody")

    def resolve_wav(self, wav: str) -> Path:
        """Absolute path of a row's ``wav`` (see the module docstring for the rule)."""
        path = Path(wav)
        if path.is_absolute():
            return path
        return (self.audio_root or self.root) / path


def write_prepared_corpus(
    out_dir: str | os.PathLike,
    name: str,
    rows: Sequence[Mapping[str, Any]],
    label_set: LabelSet,
    folds: Mapping[int, Mapping[str, Iterable[str]]],
    audio_root: str | os.PathLike | None = None,
    extra: Mapping[str, Any] | None = None,
) -> PreparedCorpus:
    """Write a prepared corpus folder.

    ``folds`` maps a fold number to ``{split: keys}``; every key must be a row's key. Rows are
    written to each split in the order of ``rows``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_key = {row["key"]: row for row in rows}
    write_manifest(out / f"{name}.jsonl", rows)
    label_map = dict(label_set.raw_map) or {label: label for label in label_set.classes}
    (out / "label_map.json").write_text(json.dumps(label_map, indent=2) + "\n", encoding="utf-8")
    for fold, splits in sorted(folds.items()):
        for split, keys in splits.items():
            keys = set(keys)
            unknown = sorted(keys - by_key.keys())
            if unknown:
                raise ManifestError(f"fold {fold} {split} names keys with no row: {unknown[:5]}")
            write_manifest(fold_path(out, name, fold, split), (r for r in rows if r["key"] in keys))
    meta = {
        "corpus": name,
        "classes": list(label_set.classes),
        "folds": sorted(folds),
        "audio_root": str(audio_root) if audio_root is not None else None,
        "num_utterances": len(rows),
        **(extra or {}),
    }
    (out / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return load_prepared_corpus(out)


def load_prepared_corpus(root: str | os.PathLike) -> PreparedCorpus:
    """Open a folder written by :func:`write_prepared_corpus` (or ``emorl data prepare``)."""
    root = Path(root)
    meta_path = root / "corpus.json"
    if not meta_path.is_file():
        raise ManifestError(
            f"{root} is not a prepared corpus (no corpus.json); run `emorl data prepare` first"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        label_map = json.loads((root / "label_map.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ManifestError(f"{root}: unreadable corpus.json or label_map.json ({err})") from None
    name = meta["corpus"]
    source = str(root / "label_map.json")
    label_set = LabelSet.from_emobox_map(name, validate_label_map(label_map, source))
    check_map_classes(label_set, meta["classes"], source)
    if list(label_set.classes) != list(meta["classes"]):
        label_set = LabelSet(name, tuple(meta["classes"]), label_set.raw_map)
    known = {"corpus", "classes", "folds", "audio_root", "num_utterances"}
    return PreparedCorpus(
        root=root,
        name=name,
        label_set=label_set,
        folds=[int(f) for f in meta["folds"]],
        audio_root=Path(meta["audio_root"]) if meta.get("audio_root") else None,
        extra={k: v for k, v in meta.items() if k not in known},
    )


def update_rows(corpus: PreparedCorpus, updates: Mapping[str, Mapping[str, Any]]) -> int:
    """Set fields of rows, by key, in ``<corpus>.jsonl`` and in every fold file alike.

    ``updates[key][field] = value`` sets a field; a value of ``None`` removes it. Keys absent
    from ``updates`` and every other field are left as they are; each file is rewritten
    atomically. Returns the number of main-manifest rows changed.
    """

    def apply(rows: list[dict]) -> tuple[list[dict], int]:
        changed = 0
        for row in rows:
            fields = updates.get(row["key"])
            if not fields:
                continue
            before = dict(row)
            for name, value in fields.items():
                if value is None:
                    row.pop(name, None)
                else:
                    row[name] = value
            changed += row != before
        return rows, changed

    def rewrite(path: Path, rows: list[dict]) -> None:
        mode = path.stat().st_mode & 0o777
        write_manifest(path, rows)
        os.chmod(path, mode)  # keep the file's permissions (mkstemp makes 0600 files)

    rows, changed = apply(corpus.rows())
    rewrite(corpus.manifest_path, rows)
    for fold in corpus.folds:
        for split in SPLITS:
            path = fold_path(corpus.root, corpus.name, fold, split)
            if path.exists():
                rewrite(path, apply(read_manifest(path))[0])
    return changed


def update_corpus_meta(root: str | os.PathLike, entries: Mapping[str, Any]) -> None:
    """Set (or, with value ``None``, remove) top-level entries of ``corpus.json``, atomically."""
    path = Path(root) / "corpus.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        mode = path.stat().st_mode & 0o777
    except (OSError, json.JSONDecodeError) as err:
        raise ManifestError(f"{root}: unreadable corpus.json ({err})") from None
    for name, value in entries.items():
        if value is None:
            meta.pop(name, None)
        else:
            meta[name] = value
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".corpus.json.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

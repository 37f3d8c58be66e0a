"""``emorl data import-hf SOURCE --out DIR``: a Hugging Face dataset -> a prepared corpus.

The source (:mod:`emorl.data.hf_source`: a ``save_to_disk`` folder, parquet / arrow files, or a
Hub id through the ``datasets`` cache) is read split by split in batches of ``batch_size`` rows,
with its audio column as ``Audio(decode=False)``; each row becomes a manifest row exactly as a
preparer makes one (:func:`emorl.data.corpora.common.probe_utterances`): the clip is probed by
:func:`emorl.audio.probe_audio` (soundfile, else PyAV) for its length and sample rate, and
training decodes it with :func:`emorl.audio.load_audio` (mono, 16 kHz) like every corpus.

- **Audio bytes** stored in the dataset are written once to ``DIR/audio/<key><ext>``
  (:mod:`emorl.data.hf_audio`: the extension from the cell's path or the bytes' magic number;
  no torchcodec); a file already there with the same
  size is not rewritten, so a second import costs no audio I/O. Disk cost: one copy of the
  encoded audio, as stored in the dataset (no re-encoding). **Paths** are kept (absolute, or
  relative to ``audio_root`` or the source folder).
- **Skips** are the preparers' (:class:`emorl.data.corpora.common.SkipLog`): ``missing``,
  ``unreadable``, ``empty``, ``too-long`` (only with ``max_seconds``), ``unknown-label`` (only
  with ``skip_unknown_labels``; otherwise a label outside the map is an error, as in the
  preparers); each is a warning naming the row, counted and listed in ``corpus.json``'s summary.
- **Memory stays flat**: rows are written to ``<name>.jsonl`` as they come; what is kept per row
  is its key, label, speaker, length and split (:class:`_Kept`), then the fold files are written
  in one pass over the manifest's lines (:mod:`emorl.data.hf_folds`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import tempfile
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from emorl.audio import EmptyAudioError, MissingAudioError
from emorl.data.corpora.common import SkipLog, format_summary
from emorl.data.hf_audio import probe_cell
from emorl.data.hf_folds import check_roles, plan_folds, write_corpus
from emorl.data.hf_labels import LabelResolver
from emorl.data.hf_source import audio_kind, num_rows, open_source, parse_splits, resolve_column, source_kind, undecoded
from emorl.data.manifest import PreparedCorpus
from emorl.labels import UnknownLabelError

log = logging.getLogger("emorl.data.hf")


@dataclass
class _Kept:
    """What the import keeps in memory per written row: enough for folds and the summary."""

    index: dict[str, int] = field(default_factory=dict)  # key -> row number in the manifest
    labels: list[str] = field(default_factory=list)
    speakers: list[str | None] = field(default_factory=list)
    lengths: array = field(default_factory=lambda: array("d"))
    splits: list[list[str]] = field(default_factory=list)  # source split names of each row


def default_name(source: str) -> str:
    """Corpus name from SOURCE: its last folder or file stem before any glob (``Zahra99/IEMOCAP_Audio`` ->
    ``iemocap_audio``, ``/d/ravdess/*.parquet`` -> ``ravdess``)."""
    stem = Path(re.split(r"[*?\[]", source)[0].rstrip("/") or "hf")
    base = stem.stem if stem.suffix in (".parquet", ".arrow") else stem.name
    return re.sub(r"\W+", "_", base).strip("_").lower() or "hf"


def exported_name(dataset: Any, columns: Sequence[str]) -> str | None:
    """The corpus name in the ``dataset`` column ``export-hf`` writes (first row), so an export
    imports back under its own name and keys."""
    if "dataset" not in columns:
        return None
    first = next(iter(dataset.select_columns(["dataset"]).iter(batch_size=1)), None)
    value = first["dataset"][0] if first else None
    return value if isinstance(value, str) and re.fullmatch(r"\w[\w.-]*", value) else None


def speaker_extractor(pattern: str | None):
    """``--speaker-pattern``: value -> its first group (or whole match); None when it does not match."""
    if not pattern:
        return lambda value: value
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"--speaker-pattern {pattern!r} is not a regular expression ({err}), fix it") from None

    def speaker(value: str) -> str | None:
        match = regex.search(value)
        return (match.group(1) if regex.groups else match.group(0)) if match else None

    return speaker


def _gender(value: Any) -> str | None:
    text = str(value or "").strip().lower()
    return {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}.get(text)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return None  # binary cells do not belong in a JSON manifest
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def _extra_fields(batch: dict, i: int, keep: Sequence[str]) -> dict:
    """Kept columns; ``prosody`` (a JSON string, as ``export-hf`` writes it) is parsed back."""
    extra = {}
    for column in keep:
        value = _jsonable(batch[column][i])
        if column == "prosody" and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        if value is not None:
            extra[column] = value
    return extra


def iter_batches(dataset: Any, batch_size: int) -> Iterator[dict]:
    """Column batches of a Dataset or IterableDataset (Arrow-backed, never all rows at once)."""
    yield from dataset.iter(batch_size=batch_size)


def import_hf(source: str, out: str | os.PathLike, *, name: str | None = None, config: str | None = None,
              audio_column: str | None = None, label_column: str | None = None, speaker_column: str | None = None,
              gender_column: str | None = None, transcript_column: str | None = None, key_column: str | None = None,
              speaker_pattern: str | None = None,
              keep_columns: Sequence[str] = (), split_column: str | None = None, splits: str | None = None,
              folds: int | None = None, leave_one_split_out: bool = False, seed: int = 0,
              label_map: str | None = None, skip_unknown_labels: bool = False, max_seconds: float | None = None,
              audio_root: str | os.PathLike | None = None, workers: int = 4, batch_size: int = 256,
              progress: bool | None = None) -> PreparedCorpus:
    """Import a Hugging Face dataset as a prepared corpus in ``out`` (see the module docstring).

    Columns default to conventional names (:data:`emorl.data.hf_source.DEFAULT_COLUMNS`). Folds:
    ``folds=N`` makes N seeded speaker-independent folds; ``leave_one_split_out`` tests each split
    (or ``split_column`` value) in turn; otherwise split names give the roles (``train`` /
    ``validation`` / ``test``, ``fold_K_<split>``; ``splits="a,b=test"`` picks and renames them),
    and a dataset with a single split gets 5 speaker folds. ``speaker_pattern``: a regular
    expression whose first group (or whole match) in the speaker column's value is the speaker
    (``(Ses\\d\\d)[FM]_`` on IEMOCAP file names gives the session).
    """
    from tqdm.auto import tqdm

    out = Path(out)
    opened = open_source(source, config)
    chosen = parse_splits(splits)
    if not split_column:  # --splits picks the dataset's splits (else the split column's values)
        unknown = [s for s in chosen if s not in opened]
        if unknown:
            raise ValueError(f"--splits names {unknown}, the dataset's splits are {list(opened)}, pick among them")
        opened = {s: opened[s] for s in chosen} if chosen else opened
        if len(opened) > 1 and folds is None and not leave_one_split_out:  # fail before reading any row
            check_roles(list(opened), {s: r for s, r in chosen.items() if r})
    first = next(iter(opened.values()))
    columns = list(first.features or {})
    name = name or exported_name(first, columns) or default_name(source)
    audio_col = resolve_column(columns, audio_column, "audio", required=True)
    label_col = resolve_column(columns, label_column, "label", required=True)
    role_cols = {role: resolve_column(columns, given, role, required=False) for role, given in (
        ("speaker", speaker_column), ("gender", gender_column), ("transcript", transcript_column), ("key", key_column))}
    if split_column:
        resolve_column(columns, split_column, "split", required=True)
    for column in keep_columns:
        resolve_column(columns, column, "kept", required=True)
    auto_kept = [c for c in ("prosody", "rationale", "rationale_source") if c in columns and c not in keep_columns]
    keep = [*keep_columns, *auto_kept]
    kind = audio_kind(first.features[audio_col], audio_col)
    labels = LabelResolver(name, first.features[label_col], label_col, label_map)
    speaker_of = speaker_extractor(speaker_pattern)
    log.info("%s: audio %r (%s), label %r, %s", name, audio_col, kind, label_col,
             ", ".join(f"{role} {col!r}" for role, col in role_cols.items() if col) or "no speaker column")

    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    bases = [Path(p) for p in (audio_root, source if source_kind(source) in ("disk", "folder") else None) if p]
    skips, kept = SkipLog(name), _Kept()
    total = sum(n for n in (num_rows(d) for d in opened.values()) if n) or None
    bar = tqdm(total=total, unit="rows", desc=f"import-hf {name}", disable=progress is False or None)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.jsonl.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as manifest, ThreadPoolExecutor(max(1, workers)) as pool:
            for split_name, dataset in opened.items():
                dataset = undecoded(dataset, audio_col) if kind == "audio" else dataset
                offset = 0
                for batch in iter_batches(dataset, batch_size):
                    rows = _batch_rows(batch, split_name, offset, name, len(opened) > 1, label_col, split_column,
                                       chosen, role_cols, labels, skips, kept, skip_unknown_labels, source,
                                       speaker_of)
                    offset += len(batch[label_col])
                    probes = pool.map(lambda r: probe_cell(batch[audio_col][r[0]], r[1]["key"], audio_dir, bases), rows)
                    for (i, row), probed in zip(rows, probes):
                        _write_row(manifest, row, probed, batch, i, keep, max_seconds, skips, kept)
                    bar.update(len(batch[label_col]))
        bar.close()
        manifest_path = out / f"{name}.jsonl"
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; the preparers' manifests are 0644
        os.replace(tmp, manifest_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if not kept.labels:
        raise ValueError(f"{name}: no usable row in {source} ({skips.total} skipped), nothing imported, "
                         "see the warnings above")
    plan = plan_folds(kept.splits, kept.speakers, folds=folds, leave_one_split_out=leave_one_split_out,
                      roles={s: r for s, r in chosen.items() if r}, seed=seed)
    provenance = {"source": f"hf:{source}", "hf": {"config": config, "audio_column": audio_col,
                  "label_column": label_col, **{f"{r}_column": c for r, c in role_cols.items()},
                  "split_column": split_column, "splits": list(opened), "folds": plan.describe, "seed": seed}}
    prepared = write_corpus(out, name, manifest_path, kept, labels.label_set(), plan, skips, provenance)
    log.info("%s", format_summary(prepared.extra["summary"], name))
    return prepared


def _batch_rows(batch: dict, split_name: str, offset: int, name: str, several_splits: bool, label_col: str,
                split_column: str | None, chosen: dict, role_cols: dict, labels: LabelResolver, skips: SkipLog,
                kept: _Kept, skip_unknown: bool, source: str, speaker_of) -> list[tuple[int, dict]]:
    """Manifest rows (without audio fields) of a batch's new rows; repeated keys only add a split."""
    rows, pending = [], {}
    for i in range(len(batch[label_col])):
        index = offset + i
        split = str(batch[split_column][i]) if split_column else split_name
        if split_column and chosen and split not in chosen:
            skips.not_selected[f"split {split}"] += 1
            continue
        key_value = batch[role_cols["key"]][i] if role_cols["key"] else None
        if key_value is None:
            key = f"{name}-{split_name}-{index:06d}" if several_splits else f"{name}-{index:06d}"
        else:
            key = str(key_value) if str(key_value).startswith(f"{name}-") else f"{name}-{key_value}"
        where = f"{source} split {split_name} row {index} (key {key})"
        try:
            raw = labels.raw(batch[label_col][i], where)
            label = labels.canonical(raw, where)
        except UnknownLabelError as err:
            if not skip_unknown:
                raise
            skips.other("unknown-label", key, str(err))
            continue
        if label is None:
            skips.not_selected[raw] += 1
            continue
        if key in kept.index:
            _repeat(kept.labels[kept.index[key]], kept.splits[kept.index[key]], key, split, label, where)
            continue
        if key in pending:  # twice in this batch: one file, one probe
            _repeat(pending[key]["label"], pending[key]["_splits"], key, split, label, where)
            continue
        row = {"key": key, "dataset": name, "emo": raw, "label": label}
        for role in ("speaker", "gender", "transcript"):
            column = role_cols[role]
            value = batch[column][i] if column else None
            value = _gender(value) if role == "gender" else (str(value).strip() if value not in (None, "") else None)
            value = speaker_of(value) if role == "speaker" and value else value
            if value:
                row[role] = value
        row["_splits"] = [split]
        pending[key] = row
        rows.append((i, row))
    return rows


def _repeat(label_before: str, splits: list[str], key: str, split: str, label: str, where: str) -> None:
    """A key seen before: a row in several folds' splits (as ``export-hf`` writes them) gets one
    more split; a different label or the same split twice means the keys are not unique."""
    if label_before != label:
        raise ValueError(f"{where}: key {key} was labelled {label_before} earlier and {label} here, "
                         "name a unique --key-column")
    if split in splits:
        raise ValueError(f"{where}: key {key} appears twice in split {split}, name a unique --key-column")
    splits.append(split)


def _write_row(manifest, row: dict, probed: Any, batch: dict, i: int, keep: Sequence[str],
               max_seconds: float | None, skips: SkipLog, kept: _Kept) -> None:
    """Write one probed row to the manifest, or record why it is skipped."""
    key, splits = row["key"], row.pop("_splits")
    if isinstance(probed, MissingAudioError):
        skips.missing(key, probed)
        return
    if isinstance(probed, EmptyAudioError):
        skips.other("empty", key, str(probed))
        return
    if isinstance(probed, Exception):
        skips.unreadable(key, probed)
        return
    path, info = probed
    if max_seconds is not None and info.duration > max_seconds:
        skips.other("too-long", key, f"{info.duration:.1f} s > --max-seconds {max_seconds:g}")
        return
    full = {"key": key, "dataset": row["dataset"], "wav": str(path), "type": "raw", "sample_rate": info.sample_rate,
            "num_frame": info.num_frames, "task": "category", "length": info.duration, "emo": row["emo"],
            "channel": 1, "label": row["label"]}
    full.update({k: v for k, v in row.items() if k not in full})
    full.update(_extra_fields(batch, i, keep))
    manifest.write(json.dumps(full, ensure_ascii=False) + "\n")
    kept.index[key] = len(kept.labels)
    kept.labels.append(row["label"])
    kept.speakers.append(row.get("speaker"))
    kept.lengths.append(info.duration)
    kept.splits.append(splits)


def add_parser(dsub: argparse._SubParsersAction) -> None:
    """``emorl data import-hf``'s options."""
    p = dsub.add_parser("import-hf", help="a Hugging Face dataset (folder, parquet, Hub id) -> prepared corpus")
    p.add_argument("source", help="save_to_disk folder, folder or glob of parquet/arrow files, or Hub id owner/name")
    p.add_argument("--out", required=True, type=Path, help="the prepared corpus folder (audio bytes go to OUT/audio)")
    p.add_argument("--name", help="corpus name (default: an export's own, else from SOURCE)")
    p.add_argument("--config", help="Hub dataset configuration (subset) name")
    for role in ("audio", "label", "speaker", "gender", "transcript", "key"):
        p.add_argument(f"--{role}-column", help=f"column of the {role} (default: a conventional name)")
    p.add_argument("--speaker-pattern", help="regex: its first group in the speaker column's value is the speaker")
    p.add_argument("--keep-columns", default="", help="comma-separated columns copied into the manifest rows")
    p.add_argument("--split-column", help="column naming each row's split (train / validation / test ...)")
    p.add_argument("--splits", help="dataset splits (or split-column values) to read, NAME or NAME=train|valid|test")
    p.add_argument("--folds", type=int, help="make N seeded speaker-independent folds (the default, 5, without splits)")
    p.add_argument("--leave-one-split-out", action="store_true", help="fold k tests the k-th split (e.g. sessions)")
    p.add_argument("--seed", type=int, default=0, help="seed of the speaker folds")
    p.add_argument("--label-map", help="JSON raw label -> class (null = leave out), or iemocap|meld|ravdess|savee")
    p.add_argument("--skip-unknown-labels", action="store_true", help="skip (and count) rows whose label is not in the map")
    p.add_argument("--max-seconds", type=float, help="skip (and count) clips longer than this (default: keep all)")
    p.add_argument("--audio-root", type=Path, help="folder relative audio paths are under")
    p.add_argument("--workers", type=int, default=4, help="threads writing and probing clips")
    p.add_argument("--batch-size", type=int, default=256, help="rows read at a time")
    p.set_defaults(hf_run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``emorl data import-hf`` from parsed arguments."""
    keep = [c.strip() for c in args.keep_columns.split(",") if c.strip()]
    import_hf(args.source, args.out, name=args.name, config=args.config, audio_column=args.audio_column,
              label_column=args.label_column, speaker_column=args.speaker_column, gender_column=args.gender_column,
              transcript_column=args.transcript_column, key_column=args.key_column, keep_columns=keep,
              speaker_pattern=args.speaker_pattern,
              split_column=args.split_column, splits=args.splits, folds=args.folds,
              leave_one_split_out=args.leave_one_split_out, seed=args.seed, label_map=args.label_map,
              skip_unknown_labels=args.skip_unknown_labels, max_seconds=args.max_seconds, audio_root=args.audio_root,
              workers=args.workers, batch_size=args.batch_size)
    return 0

"""``emorl data export-hf PREPARED --out DIR``: a prepared corpus -> a Hugging Face dataset folder.

The folder is a ``DatasetDict.save_to_disk`` (``datasets.load_from_disk(DIR)`` opens it, in a
process that never imports emorl) plus a dataset card, ``README.md``, whose front matter lists the
features, the splits with their sizes and a ``configs`` entry so the same folder, uploaded, loads
with ``datasets.load_dataset(ID)``; its ``license`` is left empty for the user to fill in.

- **Splits** are the folds: a corpus with one fold (or ``--fold K``) gives ``train`` /
  ``validation`` / ``test``, one with several gives ``fold_K_train`` / ``fold_K_validation`` /
  ``fold_K_test`` for each K (so a row is stored once per fold: with ``--with-audio`` the audio is
  stored K times). An empty split (a RAVDESS demo fold without test actors) is not written:
  ``datasets`` cannot save a split with no rows; the card names it.
- **Columns**: ``key``, ``audio`` (an ``Audio(decode=False)`` column built from a ``{bytes,
  path}`` struct: the clip's bytes with ``--with-audio``, else only its absolute path, usable on
  this machine), ``label`` (``ClassLabel``, the corpus's classes in order), ``emo`` (the raw
  label), ``dataset``, and whichever of ``speaker``, ``gender``, ``transcript``, ``length``,
  ``sample_rate``, ``num_frame``, ``channel``, ``rationale``, ``rationale_source`` the rows have;
  ``prosody`` (``emorl data prosody``'s measures, bins and caption) as a JSON string and
  ``prosody_caption`` as text.
- Rows are generated from the fold files line by line and written by ``datasets`` in batches of
  64, so memory stays flat whatever the corpus's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from emorl.data.manifest import SPLITS, fold_path, load_prepared_corpus

#: Optional columns and their ``datasets`` value types, in column order.
OPTIONAL_COLUMNS = (("speaker", "string"), ("gender", "string"), ("transcript", "string"), ("length", "float64"),
                    ("sample_rate", "int64"), ("num_frame", "int64"), ("channel", "int64"),
                    ("prosody", "string"), ("prosody_caption", "string"), ("rationale", "string"),
                    ("rationale_source", "string"))
COLUMN_TYPES = dict(OPTIONAL_COLUMNS)
HF_SPLIT = {"train": "train", "valid": "validation", "test": "test"}
WRITER_BATCH = 64


def read_lines(path: str | os.PathLike) -> Iterator[dict]:
    """Rows of a JSONL manifest, one at a time."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def present_columns(manifest: Path) -> list[str]:
    """The optional columns that at least one row of the corpus fills."""
    seen: set[str] = set()
    for row in read_lines(manifest):
        seen.update(name for name in row if row[name] is not None)
        if (row.get("prosody") or {}).get("caption"):
            seen.add("prosody_caption")
    return [name for name, _ in OPTIONAL_COLUMNS if name in seen]


def split_name(fold: int, split: str, several_folds: bool) -> str:
    """The dataset split a fold file becomes (``test`` or ``fold_3_test``)."""
    return f"fold_{fold}_{HF_SPLIT[split]}" if several_folds else HF_SPLIT[split]


def example(row: dict, wav: Path, columns: tuple[str, ...], with_audio: bool) -> dict:
    """One dataset row from a manifest row (``label`` as its class name; ClassLabel encodes it)."""
    audio = {"bytes": wav.read_bytes(), "path": wav.name} if with_audio else {"bytes": None, "path": str(wav)}
    item = {"key": row["key"], "audio": audio, "label": row["label"], "emo": str(row.get("emo", row["label"])),
            "dataset": str(row.get("dataset", ""))}
    for name in columns:
        if name == "prosody":
            item[name] = json.dumps(row["prosody"], ensure_ascii=False) if row.get("prosody") else None
        elif name == "prosody_caption":
            item[name] = (row.get("prosody") or {}).get("caption")
        else:  # as the column's type: a manifest may hold a speaker as 7 or "07"
            value, kind = row.get(name), COLUMN_TYPES[name]
            item[name] = None if value is None else str(value) if kind == "string" else (
                float(value) if kind == "float64" else int(value))
    return item


def _generate(path: str, root: str, columns: tuple[str, ...], with_audio: bool) -> Iterator[dict]:
    corpus = load_prepared_corpus(root)
    for row in read_lines(path):
        yield example(row, corpus.resolve_wav(row["wav"]), columns, with_audio)


def features_of(classes: list[str], columns: list[str]):
    """The features before the audio cast: ``audio`` is a plain ``{bytes, path}`` struct."""
    import datasets

    types = COLUMN_TYPES
    return datasets.Features({
        "key": datasets.Value("string"),
        "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
        "label": datasets.ClassLabel(names=list(classes)),
        "emo": datasets.Value("string"),
        "dataset": datasets.Value("string"),
        **{name: datasets.Value(types[name]) for name in columns},
    })


def dataset_card(name: str, prepared: Path, dd: Any, empty: list[str], with_audio: bool) -> str:
    """README.md: YAML front matter (features, splits, sizes, configs, an empty licence) and a body."""
    import yaml

    first = next(iter(dd.values()))
    features = first.info._to_yaml_dict()["features"] if hasattr(first.info, "_to_yaml_dict") else first.features.to_dict()
    splits = [{"name": s, "num_bytes": int(d.data.nbytes), "num_examples": d.num_rows} for s, d in dd.items()]
    meta = {"pretty_name": name, "task_categories": ["audio-classification"],
            "tags": ["speech-emotion-recognition", "emorl"],
            "dataset_info": {"features": features, "splits": splits,
                             "dataset_size": sum(s["num_bytes"] for s in splits)},
            "configs": [{"config_name": "default", "data_files": [
                {"split": s, "path": f"{s}/data-*.arrow"} for s in dd]}]}
    front = ("license:  # fill in the corpus's licence before sharing (emorl cannot know it)\n"
             + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    classes = first.features["label"].names
    rows = "\n".join(f"| `{s['name']}` | {s['num_examples']} |" for s in splits)
    columns = "\n".join(f"| `{c}` | {first.features[c]} |" for c in first.features)
    audio = ("the clips' bytes are embedded" if with_audio else
             "only the clips' absolute paths on the machine that exported it (export with `--with-audio` to share)")
    return f"""---
{front}---

# {name}

Exported by `emorl data export-hf` from the prepared corpus `{prepared}`: its folds are the
splits, `label` is a `ClassLabel` over {classes}, and in `audio` {audio}.
{f"Empty splits, not written (datasets cannot save a split with no rows): {empty}." if empty else ""}

| split | rows |
| --- | --- |
{rows}

| column | feature |
| --- | --- |
{columns}

```python
import datasets
ds = datasets.load_from_disk("path/to/this/folder")  # or datasets.load_dataset("<owner>/<name>") once uploaded
ds["{splits[0]['name']}"][0]["audio"]                # {{"bytes": ..., "path": ...}}: decode=False, no torchcodec needed
```

`emorl data import-hf` reads this folder back into a prepared corpus with the same rows, labels and folds.
"""


def export_hf(prepared_dir: str | os.PathLike, out: str | os.PathLike, with_audio: bool = False,
              fold: int | None = None) -> Any:
    """Write the prepared corpus as a dataset folder with a card (module docstring); returns the DatasetDict."""
    import datasets

    corpus, out = load_prepared_corpus(prepared_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty, remove it or choose another --out")
    if fold is not None and fold not in corpus.folds:
        raise ValueError(f"--fold {fold}: {corpus.root} has folds {corpus.folds}, choose one of them")
    folds = [fold] if fold is not None else corpus.folds
    columns = present_columns(corpus.manifest_path)
    features = features_of(list(corpus.label_set.classes), columns)
    splits, empty = {}, []
    scratch = Path(tempfile.mkdtemp(prefix=".export-hf.", dir=out.parent if out.parent.exists() else None))
    try:
        for k in folds:
            for split in SPLITS:
                path, hf_name = fold_path(corpus.root, corpus.name, k, split), split_name(k, split, len(folds) > 1)
                if not path.exists():
                    continue
                if not any(line.strip() for line in path.open(encoding="utf-8")):
                    empty.append(hf_name)
                    continue
                ds = datasets.Dataset.from_generator(
                    _generate, features=features, cache_dir=str(scratch), writer_batch_size=WRITER_BATCH,
                    gen_kwargs={"path": str(path), "root": str(corpus.root), "columns": tuple(columns),
                                "with_audio": with_audio})
                splits[hf_name] = ds.cast_column("audio", datasets.Audio(decode=False)) if with_audio else ds
        if not splits:
            raise ValueError(f"{corpus.root} has no non-empty split to export, check its fold files")
        datasets.DatasetDict(splits).save_to_disk(str(out))
        if not with_audio:
            mark_audio_column(out, list(splits))
        dd = datasets.load_from_disk(str(out))
        (out / "README.md").write_text(dataset_card(corpus.name, corpus.root, dd, empty, with_audio), encoding="utf-8")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dd


def mark_audio_column(out: Path, split_names: list[str]) -> None:
    """Declare the saved ``{bytes, path}`` struct column ``audio`` an ``Audio(decode=False)`` column.

    Why not cast before saving: ``save_to_disk`` embeds the file of every local path of an Audio
    column, which is what ``--with-audio`` is for; without it only the paths are wanted. An Audio
    column is stored as exactly this struct, so naming the feature in each split's
    ``dataset_info.json`` (which ``load_from_disk`` reads the features from) is all it takes.
    """
    for name in split_names:
        info_path = out / name / "dataset_info.json"
        info = json.loads(info_path.read_text(encoding="utf-8"))
        info["features"]["audio"] = {"decode": False, "_type": "Audio"}
        info_path.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def upload_command(out: Path, hub_id: str) -> str:
    """The command that uploads the folder to the Hub (emorl never does it itself)."""
    return f"hf upload {hub_id} {out} . --repo-type dataset"


def add_parser(dsub: argparse._SubParsersAction) -> None:
    """``emorl data export-hf``'s options."""
    p = dsub.add_parser("export-hf", help="a prepared corpus -> Hugging Face dataset folder (folds as splits) + card")
    p.add_argument("prepared", type=Path, help="a prepared corpus folder")
    p.add_argument("--out", required=True, type=Path, help="the dataset folder to write (new or empty)")
    p.add_argument("--with-audio", action="store_true", help="embed the clips' bytes (default: their paths only)")
    p.add_argument("--fold", type=int, help="export this fold only, as train / validation / test")
    p.add_argument("--hub-id", help="print the command that uploads the folder as this Hub dataset (no upload)")
    p.set_defaults(hf_run=run)


def run(args: argparse.Namespace) -> int:
    """Run ``emorl data export-hf`` from parsed arguments."""
    dd = export_hf(args.prepared, args.out, with_audio=args.with_audio, fold=args.fold)
    print(f"wrote {args.out}: " + ", ".join(f"{s} {d.num_rows}" for s, d in dd.items()))
    if args.hub_id:
        if not args.with_audio:
            print("note: without --with-audio the audio column holds paths on this machine only")
        print("to upload it (not done here; needs `hf auth login` and a network):")
        print("  " + upload_command(args.out, args.hub_id))
    return 0

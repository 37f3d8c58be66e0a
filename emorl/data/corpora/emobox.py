"""EmoBox interoperability: import any EmoBox corpus, and build EmoBox's cross-corpus track (track 2).

:func:`import_emobox` reads one of EmoBox's 32 manifests (``data/<corpus>/<corpus>.jsonl``:
``key, dataset, wav, type, sample_rate, num_frame, task, length, emo, channel``, ``wav`` relative
to the folder EmoBox calls the user data dir, the parent of ``downloads/``) with its
``label_map.json`` and ``fold_K/`` folders, and writes a prepared corpus that keeps EmoBox's keys.

:func:`make_track2` builds EmoBox's cross-corpus test set of one corpus: the 240 utterances of
``data/track2/<CORPUS>_selected_balenced.jsonl`` (60 each of angry, happy, neutral, sad), found in
a prepared corpus of IEMOCAP, MELD, RAVDESS or SAVEE. How a selection's ``wav_filename`` maps to a
prepared key:

* IEMOCAP ``happy/Ses02F_impro03_F019.wav`` -> ``iemocap-Ses02F_impro03_F019``
* RAVDESS ``Actor_15/03-01-03-01-01-02-15.wav`` -> ``ravdess-03-01-03-01-01-02-15``
* SAVEE ``JK/sa09.wav`` -> ``savee-JK-sa09``
* MELD ``audio/dia933_utt6.wav`` -> ``meld-dia933_utt6-{train,dev,test}``: the file name does
  not say the split, and the 240 come from all three (checked against the official CSVs: 185
  train, 16 dev, 39 test). ``final_videos_test...`` names are test; otherwise the split whose
  utterance has the selection's label and speaker is taken (unique for 238 of 240); the two left
  (``dia208_utt1``, ``dia252_utt15``: neutral Joey in both train and test) go to train, the split
  most of the selection comes from, and are logged.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath

from emorl.data.corpora.common import SkipLog, finish, log, raw_label
from emorl.data.manifest import (
    SPLITS,
    ManifestError,
    PreparedCorpus,
    load_prepared_corpus,
    read_manifest,
)
from emorl.labels import CORPUS_LABELS, CROSS_CORPUS_LABELS, LabelSet, canonical_label, check_map_classes, validate_label_map

_FOLD_DIR = re.compile(r"^fold_(\d+)$")
#: Order in which MELD splits are preferred when a track-2 file name fits several equally well.
MELD_SPLIT_PREFERENCE = ("train", "dev", "test")


def _label_set(name: str, label_map: Path | None, rows: list[dict]) -> LabelSet:
    if label_map is not None:
        try:
            mapping = json.loads(Path(label_map).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ManifestError(f"cannot read label map {label_map}: {err}") from None
        labels = LabelSet.from_emobox_map(name, validate_label_map(mapping, str(label_map)))
        present = {labels.raw_map.get(str(row["emo"])) for row in rows}
        check_map_classes(labels, [c for c in labels.classes if c in present], f"{label_map} (for {len(rows)} utterances)")
        return labels
    if name.lower() in CORPUS_LABELS:
        return CORPUS_LABELS[name.lower()]
    raws = dict.fromkeys(str(row["emo"]) for row in rows)  # no map: every raw label is its own class
    return LabelSet.from_emobox_map(name, {raw: canonical_label(raw) for raw in raws})


def emobox_channel(value: object) -> int | None:
    """EmoBox's ``channel`` as emorl reads it: its ``1`` (on every single-channel corpus) means
    "the clip's audio" and becomes None (channels averaged); another number names a channel."""
    return None if value in (None, 1) else value


def read_emobox_folds(folds_dir: Path) -> dict[int, dict[str, list[str]]]:
    """Keys of every ``fold_K/*_{train,valid,test}_fold_K.jsonl`` below ``folds_dir``."""
    folds: dict[int, dict[str, list[str]]] = {}
    for sub in sorted(Path(folds_dir).iterdir()):
        match = _FOLD_DIR.match(sub.name)
        if not (match and sub.is_dir()):
            continue
        k = int(match.group(1))
        for split in SPLITS:
            files = sorted(sub.glob(f"*_{split}_fold_{k}.jsonl"))
            if len(files) > 1:
                raise ManifestError(f"{sub}: several {split} files: {[f.name for f in files]}")
            if files:
                folds.setdefault(k, {})[split] = [row["key"] for row in read_manifest(files[0], ("key",))]
    if not folds:
        raise ManifestError(f"{folds_dir} holds no fold_K/<corpus>_<split>_fold_K.jsonl file")
    return folds


def import_emobox(
    manifest: Path,
    audio_root: Path,
    out: Path,
    name: str | None = None,
    label_map: Path | None = None,
    folds_dir: Path | None = None,
) -> PreparedCorpus:
    """Import an EmoBox manifest (any of its corpora) as a prepared corpus in ``out``.

    ``wav`` paths are resolved against ``audio_root``; rows whose clip is missing are skipped with a
    warning and counted (clips are not probed: EmoBox's length and sample rate are kept).
    ``name`` defaults to the manifest's ``dataset`` field; ``label_map`` and ``folds_dir`` default to
    ``label_map.json`` and the ``fold_K/`` folders beside the manifest. Without any fold folder the
    corpus gets a single fold 1 whose test split holds every utterance.
    """
    manifest, audio_root = Path(manifest), Path(audio_root)
    entries = read_manifest(manifest, required=("key", "wav", "emo"))
    if not entries:
        raise ManifestError(f"{manifest} holds no utterance")
    name = name or str(entries[0].get("dataset") or manifest.stem)
    if label_map is None and (manifest.parent / "label_map.json").is_file():
        label_map = manifest.parent / "label_map.json"
    labels = _label_set(name, label_map, entries)
    skips = SkipLog(name)
    rows = []
    for index, entry in enumerate(entries, start=1):
        label = raw_label(labels, str(entry["emo"]), f"{manifest} row {index} (key {entry['key']})")
        wav = Path(entry["wav"])
        wav = wav if wav.is_absolute() else audio_root / wav
        if not wav.is_file():
            skips.missing(entry["key"], wav)
            continue
        row = {**entry, "dataset": name, "wav": str(wav.absolute()), "label": label,
               "channel": emobox_channel(entry.get("channel"))}
        frames = row.get("num_frame")
        if isinstance(frames, float) and abs(frames - round(frames)) < 1e-3:
            row["num_frame"] = int(round(frames))  # EmoBox writes 70312.0 and 225191.99999999997
        rows.append(row)

    if folds_dir is None and any(_FOLD_DIR.match(p.name) for p in manifest.parent.iterdir()):
        folds_dir = manifest.parent
    if folds_dir is None:
        folds = {1: {"test": [row["key"] for row in rows]}}
    else:
        folds = read_emobox_folds(Path(folds_dir))
        kept, dropped = {row["key"] for row in rows}, set(skips.skipped["missing"])
        for k, splits in folds.items():
            for split, keys in splits.items():
                stray = [key for key in keys if key not in kept and key not in dropped]
                if stray:
                    raise ManifestError(
                        f"{folds_dir}: fold {k} {split} names keys not in {manifest}: {stray[:5]}"
                    )
                splits[split] = [key for key in keys if key in kept]
    return finish(Path(out), name, rows, labels, folds, skips, extra={"source": f"emobox:{manifest}"})


def _track2_candidates(corpus: str, wav_filename: str) -> list[str]:
    path = PurePosixPath(wav_filename)
    if corpus in ("iemocap", "ravdess"):
        return [f"{corpus}-{path.stem}"]
    if corpus == "savee":
        flat = re.match(r"^([A-Z]{2})_(.+)$", path.stem)
        return [f"savee-{flat.group(1)}-{flat.group(2)}" if flat else f"savee-{path.parent.name}-{path.stem}"]
    if corpus == "meld":
        match = re.match(r"^(final_videos_test)?dia(\d+)_utt(\d+)$", path.stem)
        if not match:
            return []
        splits = ("test",) if match.group(1) else MELD_SPLIT_PREFERENCE
        return [f"meld-dia{match.group(2)}_utt{match.group(3)}-{split}" for split in splits]
    raise ValueError(f"track 2 exists for iemocap, meld, ravdess and savee, not {corpus!r}")


def _corpus_of(prepared: PreparedCorpus, selection: Path) -> str:
    for guess in (prepared.name.lower(), selection.name.split("_")[0].lower()):
        if guess in CORPUS_LABELS:
            return guess
    raise ValueError(f"cannot tell which corpus {prepared.root} ({prepared.name!r}) is; "
                     "track 2 exists for iemocap, meld, ravdess and savee")


def make_track2(prepared_dir: Path, selection: Path, out: Path, corpus: str | None = None) -> PreparedCorpus:
    """EmoBox's cross-corpus test set of one corpus, as a prepared corpus ``<corpus>_track2`` in ``out``.

    ``prepared_dir`` is the corpus prepared by ``emorl data prepare`` (or imported from EmoBox);
    ``selection`` is EmoBox's ``track2/<CORPUS>_selected_balenced.jsonl``. Fold 1's test split holds
    the selected utterances, labelled with the selection's label (one of angry, happy, neutral, sad)
    in ``label`` and ``emo``; the corpus's own raw label is kept in ``corpus_emo``. A selected
    utterance that the prepared corpus lacks is an error naming it (see the module docstring for
    how file names map to keys).
    """
    prepared, selection = load_prepared_corpus(prepared_dir), Path(selection)
    corpus = (corpus or _corpus_of(prepared, selection)).lower()
    by_key = {row["key"]: row for row in prepared.rows()}
    picks = read_manifest(selection, required=("wav_filename", "label"))
    rows, missing, ambiguous = [], [], []
    for index, pick in enumerate(picks, start=1):
        label = raw_label(CROSS_CORPUS_LABELS, str(pick["label"]), f"{selection} row {index}")
        present = [key for key in _track2_candidates(corpus, str(pick["wav_filename"])) if key in by_key]
        if not present:
            missing.append(str(pick["wav_filename"]))
            continue
        for wanted, attr in ((label, "label"), (pick.get("speaker"), "speaker")):
            narrowed = [key for key in present if by_key[key].get(attr) == wanted]
            present = narrowed if len(present) > 1 and narrowed else present
        if len(present) > 1:
            ambiguous.append(pick["wav_filename"])
            log.info("track2: %s fits %s equally; %s taken", pick["wav_filename"], present, present[0])
        source = by_key[present[0]]
        if source["label"] != label:
            log.warning("track2: %s is %s in %s but %s in the selection; the selection's label is used",
                        present[0], source["label"], prepared.name, label)
        row = {**source, "wav": str(prepared.resolve_wav(source["wav"])), "emo": label, "label": label,
               "corpus_emo": source["emo"], "track2_wav": pick["wav_filename"]}
        if "speaker" in pick:
            row["track2_speaker"] = pick["speaker"]
        rows.append(row)
    if missing:
        raise ManifestError(
            f"{len(missing)} utterance(s) of {selection} are not in the prepared corpus {prepared.root} "
            f"(was it prepared from the full corpus?): {missing[:10]}"
        )
    keys = [row["key"] for row in rows]
    if len(set(keys)) != len(keys):
        raise ManifestError(f"{selection} selects the same utterance twice")
    name = f"{corpus}_track2"
    extra = {"source": f"track2:{selection}", "ambiguous": ambiguous}
    return finish(Path(out), name, rows, CROSS_CORPUS_LABELS, {1: {"test": keys}}, SkipLog(name), extra=extra)

"""Folds of an imported Hugging Face dataset, and writing the prepared corpus around its manifest.

Three ways to fold (:func:`plan_folds`), in this order of precedence:

1. **speaker folds made by emorl** (``--folds N``, and the default when the dataset has a single
   split that is not ``test``): speakers are shuffled with the seed, then dealt largest first to
   the fold with the fewest utterances so far; fold k tests its speakers and trains on all
   others (as EmoBox's speaker folds: no valid split, carve one at training time);
2. **leave one split out** (``--leave-one-split-out``): every split (or split-column value) in
   natural order (``session2`` before ``session10``) is a group; fold k tests the k-th;
3. **split roles**: ``train`` / ``validation`` / ``test`` (and ``dev``, ``valid``) are fold 1's,
   ``fold_K_<split>`` (what ``export-hf`` writes) fold K's; ``--splits NAME=ROLE`` renames.

A fold that has a train split but no test rows gets an empty test file, as the preparers write it.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from emorl.data.corpora.common import SkipLog, make_summary
from emorl.data.hf_source import natural_key, split_role
from emorl.data.manifest import SPLITS, PreparedCorpus, fold_path, load_prepared_corpus
from emorl.labels import LabelSet

DEFAULT_FOLDS = 5
Membership = list[tuple[int, str]]


@dataclass
class FoldPlan:
    """Which ``(fold, split)`` files each manifest row goes to."""

    folds: list[int]
    memberships: Callable[[int], Membership]  # row number -> its (fold, split) pairs
    describe: str
    groups: dict[str, int] = field(default_factory=dict)  # speaker / split -> the fold that tests it


def assign_speaker_folds(counts: Mapping[str, int], k: int, seed: int) -> dict[str, int]:
    """Speaker -> fold (1-based): seeded shuffle, then largest first to the lightest fold."""
    if k < 2:
        raise ValueError(f"--folds {k}: speaker folds need at least 2 folds, pass --folds 2 or more")
    if len(counts) < k:
        raise ValueError(f"{len(counts)} speakers cannot fill {k} speaker-independent folds, "
                         f"pass --folds {len(counts)} or fewer" if len(counts) >= 2 else
                         f"{len(counts)} speaker cannot make speaker-independent folds, give a split instead")
    order = sorted(counts, key=natural_key)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda speaker: -counts[speaker])  # stable: equal counts keep the seeded order
    loads, fold_of = [0] * k, {}
    for speaker in order:
        lightest = min(range(k), key=lambda j: (loads[j], j))
        fold_of[speaker] = lightest + 1
        loads[lightest] += counts[speaker]
    return fold_of


def _group_plan(groups_of_rows: Sequence[str], fold_of: Mapping[str, int], describe: str) -> FoldPlan:
    """Fold k tests the rows whose group is in fold k and trains on every other row."""
    folds = sorted(set(fold_of.values()))

    def memberships(i: int) -> Membership:
        tested = fold_of[groups_of_rows[i]]
        return [(k, "test" if k == tested else "train") for k in folds]

    return FoldPlan(folds, memberships, describe, dict(fold_of))


def check_roles(names: Sequence[str], roles: Mapping[str, tuple[int, str]]) -> None:
    """Every split name must say its role (or be given one with ``--splits NAME=ROLE``)."""
    unknown = [name for name in names if not (roles.get(name) or split_role(name))]
    if unknown:
        raise ValueError(f"split(s) {unknown} are not train, validation, test nor fold_K_<split>, give their "
                         "role (--splits NAME=test), or pass --leave-one-split-out or --folds N")


def plan_folds(splits: Sequence[list[str]], speakers: Sequence[str | None], folds: int | None,
               leave_one_split_out: bool, roles: Mapping[str, tuple[int, str]], seed: int) -> FoldPlan:
    """The folds of the imported rows (see the module docstring); ``splits[i]`` are row i's
    source split names, ``speakers[i]`` its speaker."""
    names = sorted({name for row in splits for name in row}, key=natural_key)
    role_of = {name: roles.get(name) or split_role(name) for name in names}
    single_untested = len(names) == 1 and not roles and (role_of[names[0]] or (0, ""))[1] != "test"
    if folds is not None or (single_untested and not leave_one_split_out):
        k = folds or DEFAULT_FOLDS
        missing = sum(speaker is None for speaker in speakers)
        if missing:
            raise ValueError(f"{missing} rows have no speaker, speaker-independent folds need one per row, "
                             "name it with --speaker-column (or give splits: --split-column, --splits)")
        fold_of = assign_speaker_folds(Counter(speakers), k, seed)
        return _group_plan(speakers, fold_of, f"{k} speaker-independent folds, seed {seed}")
    if leave_one_split_out:
        if len(names) < 2:
            raise ValueError(f"--leave-one-split-out needs 2 splits or more, the rows have {names}")
        fold_of = {name: k for k, name in enumerate(names, start=1)}
        return _group_plan([row[0] for row in splits], fold_of, f"leave one split out: {names}")
    check_roles(names, roles)
    folds_seen = sorted({role_of[name][0] for name in names})
    return FoldPlan(folds_seen, lambda i: [role_of[name] for name in splits[i]],
                    "the dataset's splits: " + ", ".join(f"{n} -> fold {role_of[n][0]} {role_of[n][1]}" for n in names))


def _write_fold_files(out: Path, name: str, manifest: Path, plan: FoldPlan) -> dict[int, dict[str, int]]:
    """One pass over the manifest's lines into every fold file; returns rows per fold and split."""
    handles: dict[tuple[int, str], Any] = {}
    counts: dict[int, dict[str, int]] = {k: {} for k in plan.folds}

    def handle(fold: int, split: str):
        if (fold, split) not in handles:
            path = fold_path(out, name, fold, split)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            handles[fold, split] = (os.fdopen(fd, "w", encoding="utf-8"), tmp, path)
            counts[fold][split] = 0
        return handles[fold, split][0]

    try:
        with manifest.open(encoding="utf-8") as lines:
            for i, line in enumerate(lines):
                for fold, split in plan.memberships(i):
                    handle(fold, split).write(line)
                    counts[fold][split] += 1
        for fold in plan.folds:
            if "test" not in counts[fold]:  # as the preparers: a fold always has a test file
                handle(fold, "test")
        for file, tmp, path in handles.values():
            file.close()
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
    except BaseException:
        for file, tmp, _ in handles.values():
            file.close()
            Path(tmp).unlink(missing_ok=True)
        raise
    return {k: {s: counts[k][s] for s in SPLITS if s in counts[k]} for k in plan.folds}


def write_corpus(out: Path, name: str, manifest: Path, kept: Any, label_set: LabelSet, plan: FoldPlan,
                 skips: SkipLog, provenance: Mapping[str, Any]) -> PreparedCorpus:
    """Fold files, ``label_map.json`` and ``corpus.json`` (the format of
    :func:`emorl.data.manifest.write_prepared_corpus`) around an already written manifest."""
    counts = _write_fold_files(out, name, manifest, plan)
    summary = make_summary([], label_set, {k: {s: range(n) for s, n in splits.items()}
                                          for k, splits in counts.items()}, skips)
    labels = Counter(kept.labels)
    summary.update(utterances=len(kept.labels), hours=round(sum(kept.lengths) / 3600, 3),
                   labels={label: labels.get(label, 0) for label in label_set.classes})
    label_map = dict(label_set.raw_map) or {label: label for label in label_set.classes}
    (out / "label_map.json").write_text(json.dumps(label_map, indent=2) + "\n", encoding="utf-8")
    meta = {"corpus": name, "classes": list(label_set.classes), "folds": plan.folds, "audio_root": None,
            "num_utterances": len(kept.labels), "summary": summary, **provenance}
    (out / "corpus.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return load_prepared_corpus(out)

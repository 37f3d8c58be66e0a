"""A run folder's own records, read back: config, ``test_results.json``, predictions, event files.

A run folder is ``runs/<name>/version_N`` (what the TensorBoard / CSV logger makes): it holds the
resolved ``config.yaml``; a tested one also ``test_results.json`` and ``predictions/<set>.jsonl``.
A test run's method is read from the config of the training run it names (its recipe), its test
sets from its own results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from emorl.results import read_test_results

#: LightningModule class -> kind of method (the ``kind`` of published rows).
KINDS = {"SFTLALM": "sft", "GRPOLALM": "grpo", "ZeroShotLALM": "zero-shot", "LinearProbe": "probe",
         "AcousticBaseline": "acoustic"}
#: A prompt format's default per kind, when a config leaves it out.
DEFAULT_PROMPTS = {"sft": "ir", "grpo": "esr", "zero-shot": "direct"}
DEFAULT_GRPO_REWARDS = ["eswr", "format_esr"]
CORPORA = ("iemocap", "meld", "ravdess", "savee")


class NotARunError(ValueError):
    """A folder that is not an emorl run folder."""


@dataclass
class RunRecord:
    """What the report needs of one run."""

    path: Path
    name: str
    kind: str
    prompt: str | None
    rewards: list[str]
    encoder: str | None
    train_corpus: str | None
    test_sets: dict[str, dict[str, float | None]]
    class_names: list[str] = field(default_factory=list)
    training_run: Path | None = None

    @property
    def method(self) -> str:
        """A short label: ``grpo esr eswr+format_esr``, ``sft ir``, ``probe wavlm-large``, ``zero-shot cot``."""
        parts = [self.kind]
        if self.encoder:
            parts.append(self.encoder)
        if self.prompt:
            parts.append(self.prompt)
        if self.rewards:
            parts.append("+".join(self.rewards))
        return " ".join(parts)


def corpus_of(name: str | None) -> str | None:
    """The corpus a test-set name or data folder is of (``meld_test`` -> ``meld``), if recognisable."""
    if not name:
        return None
    lowered = Path(str(name)).name.lower()
    return next((c for c in CORPORA if c in lowered), lowered)


def train_corpus_of(data: dict) -> str | None:
    """The training corpus of a config's ``data:`` section: its ``corpus.json`` name, else the folder's."""
    data_dir = data.get("data_dir")
    if not data_dir:
        return None
    info = Path(data_dir) / "corpus.json"
    if info.is_file():
        return corpus_of(json.loads(info.read_text(encoding="utf-8")).get("corpus"))
    return corpus_of(data_dir)


def read_config(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def method_of(model: dict) -> tuple[str, str | None, list[str], str | None]:
    """``(kind, prompt format, sorted reward names, probe encoder)`` of a config's ``model:`` section."""
    class_name = str(model.get("class_path", "")).rsplit(".", 1)[-1]
    kind = KINDS.get(class_name, class_name or "unknown")
    args = model.get("init_args") or {}
    prompt = args.get("prompt_format") or DEFAULT_PROMPTS.get(kind)
    rewards: list[str] = []
    if kind == "grpo":
        if args.get("ptr"):
            rewards = ["ptr"]
        else:
            rewards = sorted(r["name"] for r in args["rewards"]) if args.get("rewards") else list(DEFAULT_GRPO_REWARDS)
    encoder = args.get("upstream") if kind == "probe" else None
    return kind, prompt, rewards, (Path(str(encoder)).name if encoder else None)


def read_run(path: str | Path) -> RunRecord | None:
    """A run folder's record; ``None`` for a run without test results. Not a run: :class:`NotARunError`."""
    path = Path(path)
    if not path.is_dir() or not (path / "config.yaml").is_file():
        raise NotARunError(f"{path} is not an emorl run folder (no config.yaml; pass runs/<name>/version_N)")
    results = read_test_results(path)
    if results is None:
        return None
    own = read_config(path / "config.yaml")
    training_run = Path(results["training_run"]) if results.get("training_run") else None
    recipe = own
    if training_run is not None and (training_run / "config.yaml").is_file():
        recipe = read_config(training_run / "config.yaml")
    kind, prompt, rewards, encoder = method_of(recipe.get("model") or {})
    names = ((recipe.get("model") or {}).get("init_args") or {}).get("class_names") or []
    return RunRecord(path=path, name=f"{path.parent.name}/{path.name}", kind=kind, prompt=prompt, rewards=rewards,
                     encoder=encoder, train_corpus=train_corpus_of(recipe.get("data") or {}),
                     test_sets=results.get("test_sets") or {}, class_names=list(names), training_run=training_run)


def read_predictions(run: RunRecord, test_set: str) -> list[dict]:
    """Every prediction row of a test set (all ranks' files), as ``emorl test`` wrote them."""
    folder = run.path / "predictions"
    rows: list[dict] = []
    for file in sorted(folder.glob(f"{test_set}.jsonl")) + sorted(folder.glob(f"{test_set}.rank*.jsonl")):
        rows += [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows


def event_scalars(folder: Path, prefix: str = "train/") -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` of a run's TensorBoard event files, tags starting with ``prefix``."""
    import logging

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # the reader logs every file it moves to at INFO ("Directory watcher advancing ..."): not for the console
    logging.getLogger("tensorboard").setLevel(logging.WARNING)
    if not any(folder.glob("events.out.tfevents.*")):
        return {}
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags().get("scalars", []) if tag.startswith(prefix)}

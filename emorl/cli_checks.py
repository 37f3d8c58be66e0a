"""Checks and settings of a parsed ``emorl fit | validate | test | predict`` before anything is built.

Pure functions over the parsed config (a jsonargparse ``Namespace`` or plain mappings) and the
command line, so each is tested alone; :class:`emorl.lightning_cli.EmorlCLI` calls them.

- :func:`process_count` / :func:`check_accelerator`: the accelerator guard. More than one process
  in all (``num_nodes`` x ``devices``) with ``accelerator: auto`` on a machine without a visible
  GPU stops, unless ``accelerator: cpu`` is said; ``gpu`` / ``cuda`` without one stops too.
- :func:`check_ckpt_path`: a ``--ckpt_path`` that names no file is one line.
- :func:`typed_model_args`: the ``--model.init_args.KEY`` options the user typed; with
  ``--ckpt_path`` the portable ones win over the checkpoint's values (:func:`portable_overrides`),
  the ones that identify the model are refused when they differ.
- :func:`run_name_for_model`: a run whose base model was typed on the command line is named after it.
- :func:`parse_error_line`: jsonargparse's many-line parse errors as one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from emorl.errors import EmorlError
from emorl.models.identity import IDENTITY_KEYS, _plain

#: ``--ckpt_path`` values Lightning resolves itself (no file)
SPECIAL_CKPT_PATHS = ("best", "last", "hpc", "registry")

#: init arguments that name the base model (the run name follows them)
MODEL_NAME_KEYS = ("model", "upstream")


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    getter = getattr(node, "get", None)
    return getter(key, default) if callable(getter) else getattr(node, key, default)


# -- accelerator guard ------------------------------------------------------------------------------
def devices_per_node(devices: Any) -> int:
    """How many processes ``trainer.devices`` starts on one node without a GPU (``auto`` -> 1, ``-1``
    -> every CPU (counted as 2: more than one), ``"0,1"`` / ``[0, 1]`` -> 2, ``"4"`` -> 4)."""
    if devices in (None, "auto"):
        return 1
    if isinstance(devices, (list, tuple)):
        return len(devices)
    text = str(devices).strip()
    if "," in text:
        return len([part for part in text.split(",") if part.strip()])
    try:
        count = int(text)
    except ValueError:
        return 1
    return 2 if count == -1 else max(count, 1)


def process_count(trainer: Any) -> int:
    """Processes in all of a parsed ``trainer`` section: ``num_nodes`` x ``devices``."""
    return int(_get(trainer, "num_nodes", 1) or 1) * devices_per_node(_get(trainer, "devices", "auto"))


def check_accelerator(trainer: Any, gpus_visible: int) -> None:
    """The accelerator guard (see the module's docstring); raises :class:`EmorlError`."""
    accelerator = str(_get(trainer, "accelerator", "auto") or "auto").lower()
    if gpus_visible:
        return
    processes = process_count(trainer)
    if accelerator in ("gpu", "cuda"):
        raise EmorlError(f"trainer.accelerator is {accelerator} but no GPU is visible on this machine "
                         "(CUDA_VISIBLE_DEVICES, the driver), run on a machine with GPUs or pass "
                         "--trainer.accelerator cpu --trainer.devices 1")
    if accelerator == "auto" and processes > 1:
        raise EmorlError(f"no GPU is visible, so trainer.accelerator auto would start {processes} CPU processes "
                         f"(num_nodes x devices), pass --trainer.accelerator cpu to mean that, or "
                         "--trainer.devices 1")


def visible_gpus() -> int:
    """CUDA devices torch sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# -- checkpoints -----------------------------------------------------------------------------------
def check_ckpt_path(ckpt_path: Any, trainer: Any = None) -> None:
    """A ``--ckpt_path`` that is neither a file / sharded folder nor one of Lightning's names is one line;
    so is a sharded checkpoint folder given to a run that does not shard (``trainer`` without a
    model-parallel strategy): it needs the strategy that wrote it, or consolidating into one file."""
    if not ckpt_path or str(ckpt_path) in SPECIAL_CKPT_PATHS:
        return
    path = Path(ckpt_path)
    if not path.exists():
        raise EmorlError(f"--ckpt_path {ckpt_path} does not exist, give a checkpoint file "
                         "(runs/<name>/version_N/checkpoints/*.ckpt) or --ckpt_path last")
    if path.is_dir() and trainer is not None and not _shards(_get(trainer, "strategy")):
        raise EmorlError(f"--ckpt_path {ckpt_path} is a sharded checkpoint folder and this run does not shard, "
                         f"consolidate it first: emorl checkpoint consolidate {ckpt_path} --out {path.with_suffix('')}"
                         "-full.ckpt (or run with the trainer.strategy that wrote it)")


def _shards(strategy: Any) -> bool:
    """Whether a config's ``trainer.strategy`` (a name or ``{class_path: ...}``) loads sharded folders."""
    class_path = _get(strategy, "class_path") if strategy is not None and not isinstance(strategy, str) else strategy
    return bool(class_path) and str(class_path).rsplit(".", 1)[-1] in ("FSDP2Strategy", "ModelParallelStrategy")


_MODEL_OPTION = re.compile(r"^--model\.(?:init_args\.|dict_kwargs\.)?([A-Za-z_][A-Za-z0-9_]*)(?:[.=].*)?$")


def typed_model_args(argv: Sequence[str]) -> list[str]:
    """The model init arguments named on the command line (``--model.init_args.model X``,
    ``--model.init_args.dtype=float32``, ``--model.model X``), in order, each once."""
    keys: list[str] = []
    for arg in argv:
        match = _MODEL_OPTION.match(arg)
        if match and match.group(1) not in ("class_path", "init_args", "dict_kwargs") and match.group(1) not in keys:
            keys.append(match.group(1))
    return keys


def portable_overrides(typed: Mapping[str, Any], checkpoint_hparams: Mapping[str, Any]) -> tuple[dict, list[str]]:
    """Of the typed model arguments (``{key: value}``), those that differ from the checkpoint's:
    ``(portable ones that win, descriptions)``; an identifying one that differs raises
    :class:`EmorlError` (the checkpoint's model is what it is)."""
    wins, said = {}, []
    for key, value in typed.items():
        if key not in checkpoint_hparams or _plain(value) == _plain(checkpoint_hparams[key]):
            continue
        if key in IDENTITY_KEYS or key == "class_names":
            raise EmorlError(f"--model.init_args.{key} {_plain(value)!r} differs from the checkpoint's "
                             f"{_plain(checkpoint_hparams[key])!r}, which identifies the trained model, drop the "
                             "option (or train a model with it)")
        wins[key] = value
        said.append(f"{key} {_plain(value)!r} (checkpoint: {_plain(checkpoint_hparams[key])!r})")
    return wins, said


# -- run names ---------------------------------------------------------------------------------------
def model_stem(model: Any) -> str:
    """A base model's name: a zoo name as it is, a folder's last part."""
    return Path(str(model).rstrip("/")).name or str(model)


def run_name_for_model(name: str, model: str) -> str:
    """``<config's run name>-<the model's name>``: a run on a typed base model is told apart."""
    stem = model_stem(model)
    return name if stem in name else f"{name}-{stem}"


def config_files_value(argv: Sequence[str], keys: Sequence[str]) -> Any:
    """The value at ``keys`` (e.g. ``("model", "init_args", "model")``) in the ``--config`` files of
    ``argv`` (the last one that sets it), before the command line's options; None when unset."""
    import yaml

    value = None
    for i, arg in enumerate(argv):
        if arg not in ("--config", "-c") or i + 1 >= len(argv):
            continue
        source = argv[i + 1]
        try:
            text = Path(source).read_text(encoding="utf-8") if Path(source).is_file() else source
            node = yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError):
            continue
        for key in keys:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is not None:
            value = node
    return value


def typed_model_name(argv: Sequence[str], init_args: Any) -> str | None:
    """The base model typed on the command line (``--model.init_args.model`` / ``upstream``) when it
    names another model than the config files' (``tiny/qwen2-audio-7b-instruct`` for the zoo's
    ``qwen2-audio-7b-instruct`` is the same model), else None."""
    for key in typed_model_args(argv):
        if key in MODEL_NAME_KEYS and init_args is not None and init_args.get(key):
            configured = config_files_value(argv, ("model", "init_args", key))
            if configured is None or not same_model_name(str(configured), str(init_args.get(key))):
                return str(init_args.get(key))
    return None


def same_model_name(configured: str, typed: str) -> bool:
    """Whether a typed model names the config's model: the same folder or zoo name (case aside), or
    the zoo model's hub name (``/models/Qwen2-Audio-7B-Instruct`` for ``qwen2-audio-7b-instruct``)."""
    names = {model_stem(configured).lower()}
    try:
        from emorl.zoo import load_card

        names.add(load_card(configured).hub_id.rsplit("/", 1)[-1].lower())
    except (LookupError, OSError, ValueError):
        pass  # not a zoo name
    return model_stem(typed).lower() in names


# -- parse errors ------------------------------------------------------------------------------------
_KEY = re.compile(r'Parser key "([^"]+)"')
_GIVEN = re.compile(r"Given value: (.*)")
_EXPECTED = re.compile(r"Expected a <class '([^']+)'>")


def _first_error(text: str) -> str | None:
    """The first of a Union error's bullets that is not "Expected a <class 'NoneType'>", on one line."""
    if "Errors:" not in text:
        return None
    errors = text.split("Errors:", 1)[1].split("Given value type:", 1)[0]
    bullets = [" ".join(b.split()) for b in re.split(r"\n\s*- ", "\n" + errors) if b.strip()]
    bullets = [b for b in bullets if not b.startswith("Expected a <class 'NoneType'>")]
    return bullets[0] if bullets else None


def parse_error_line(message: str, command: str = "fit") -> str:
    """jsonargparse's parse error (often dozens of lines) as one line: the option, the value given,
    the types it takes, or its first real error."""
    text = str(message)
    if "File does not exist" in text or "Unable to load config" in text:
        found = re.search(r"File does not exist: '?([^'\n]+)'?", text)
        path = found.group(1) if found else "?"
        return f"--config {path}: no such file, give the path of a YAML config (e.g. configs/demo/acoustic.yaml)"
    if "arguments are required" in text:
        missing = text.split("required:", 1)[1].strip().splitlines()[0]
        return (f"{missing} not given, pass --config X.yaml (the shipped ones: configs/, docs/configs.md) "
                f"or the options themselves (`emorl {command} --help`)")
    key = _KEY.search(text)
    if key:
        given = _GIVEN.findall(text)
        expected = sorted({e for e in _EXPECTED.findall(text) if e != "NoneType"})
        first = _first_error(text)
        if given and expected and (first is None or first.startswith("Expected a")):
            return (f"--{key.group(1)} {given[-1].strip()}: expected {' or '.join(expected)}, "
                    f"see `emorl {command} --help` for the option")
        if first:
            hint = f"`emorl {command} --{key.group(1)}.help CLASS` lists a class's options" if key.group(1) in (
                "model", "data", "trainer.logger", "trainer.callbacks") else f"see `emorl {command} --help`"
            return f"--{key.group(1)}: {first}, {hint}"
        lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
        return f"--{key.group(1)}: {lines[0] if lines else 'not valid'}, see `emorl {command} --help`"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else "the command line could not be parsed") + f", see `emorl {command} --help`"


# -- emorl predict --ckpt_path CKPT, without a config ----------------------------------------------------
#: DataModule settings a checkpoint's run keeps for predicting (how clips are read and batched)
PREDICT_DATA_KEYS = ("sample_rate", "max_seconds", "duration_mode", "eval_batch_size", "batch_size", "num_workers")


def option_value(argv: Sequence[str], option: str) -> str | None:
    """The value of ``--option VALUE`` / ``--option=VALUE`` in ``argv`` (the last one), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(option + "="):
            value = arg.split("=", 1)[1]
    return value


def predict_config(checkpoint: Mapping[str, Any], ckpt_path: str) -> dict[str, Any]:
    """The config of ``emorl predict --ckpt_path CKPT --data.predict_path CLIPS`` without ``--config``:
    the checkpoint's module with its saved arguments (base model, prompt format, class names), the
    clips read as in its run, no training corpus; the run goes to ``runs/<training run name>/``."""
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    class_path = hparams.pop("_class_path", None)
    if not class_path:
        raise EmorlError(f"--ckpt_path {ckpt_path}: the checkpoint does not name its module (no _class_path), "
                         "give the run's config too (--config RUN/config.yaml)")
    class_names = hparams.pop("class_names", None)
    hparams.pop("_instantiator", None)
    if not class_names:
        raise EmorlError(f"--ckpt_path {ckpt_path}: the checkpoint holds no class names, give the run's config "
                         "(--config RUN/config.yaml) and its --data.data_dir")
    saved_data = checkpoint.get("datamodule_hyper_parameters") or {}
    data = {key: saved_data[key] for key in PREDICT_DATA_KEYS if key in saved_data}
    run = Path(ckpt_path).resolve()
    run = run.parent.parent if run.parent.name == "checkpoints" else run.parent
    name = run.parent.name if run.name.startswith("version_") else run.name
    return {
        "trainer": {"accelerator": "auto", "devices": 1, "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": "runs", "name": name or "predict", "default_hp_metric": False}}},
        "model": {"class_path": class_path, "init_args": hparams},
        "data": {**data, "data_dir": None, "label_names": list(class_names)},
    }

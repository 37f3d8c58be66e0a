"""The model zoo: one card per frozen encoder (``zoo/*.yaml``), name -> local folder, tiny builders.

Nothing here downloads. A model is found, in this order, as

1. a local folder given directly (``resolve("/models/wavlm-large")``);
2. ``$EMORL_MODELS/<name>`` (a folder written by ``hf download HUB_ID --local-dir ...``);
3. the Hugging Face cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
   ``~/.cache/huggingface/hub``), through ``huggingface_hub.snapshot_download(...,
   local_files_only=True)``.

When none holds it, :func:`resolve` raises one :class:`ModelNotAvailableError` that names the
model, the places looked in and the commands that fetch it. ``list_main`` is the body of
``emorl zoo list``. Tiny random stand-ins of the zoo's models are built by :mod:`emorl.tiny_models`
(``emorl zoo tiny``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

def _find_zoo_dir() -> Path:
    """``$EMORL_ZOO_DIR``; else the source tree's ``zoo/`` (a checkout, an editable install); else the
    copy a wheel installs as data files (``<prefix>/share/emorl/zoo``, see pyproject.toml)."""
    if os.environ.get("EMORL_ZOO_DIR"):
        return Path(os.environ["EMORL_ZOO_DIR"])
    source = Path(__file__).resolve().parents[1] / "zoo"
    if source.is_dir():
        return source
    import site
    import sys
    import sysconfig

    prefixes = [sysconfig.get_paths()["data"], sys.prefix, sys.base_prefix, getattr(site, "USER_BASE", None) or ""]
    for prefix in filter(None, prefixes):
        installed = Path(prefix) / "share" / "emorl" / "zoo"
        if installed.is_dir():
            return installed
    return source  # not found anywhere: errors then name the source location


#: Where the cards live (``$EMORL_ZOO_DIR`` overrides; an installed wheel ships them in <prefix>/share/emorl/zoo).
ZOO_DIR = _find_zoo_dir()

#: Fields every card has; ``kind: upstream`` cards (frozen encoders, the default) also need
#: :data:`UPSTREAM_FIELDS`. ``kind: lalm`` cards describe audio-language models, ``kind: textlm``
#: text LMs emorl runs beside them (a judge, a CoT writer: only their sizes, for ``emorl plan``).
REQUIRED_FIELDS = ("name", "hub_id", "backend", "architecture", "licence")
UPSTREAM_FIELDS = ("feature_dim", "num_layers", "frame_rate", "sample_rate")
KINDS = ("upstream", "lalm", "textlm")


class ModelNotFoundError(LookupError):
    """Neither a zoo name nor an existing folder."""


class ModelNotAvailableError(FileNotFoundError):
    """A zoo model whose weights are not on this machine (the message says how to get them;
    ``one_line`` is its short form, what ``emorl <command>: error:`` prints)."""

    def __init__(self, message: str, one_line: str | None = None) -> None:
        super().__init__(message)
        self.one_line = one_line


@dataclass(frozen=True)
class ZooCard:
    """One ``zoo/<name>.yaml`` card (see ``docs/zoo.md`` for every field)."""

    name: str
    hub_id: str
    backend: str
    architecture: str
    licence: str
    kind: str = "upstream"
    config_class: str = ""
    feature_dim: int = 0
    num_layers: int = 0
    frame_rate: float = 0.0
    sample_rate: int = 16_000
    checkpoint_class: str = ""
    paper: str = ""
    architecture_config: dict[str, Any] = field(default_factory=dict)
    feature_extractor: dict[str, Any] = field(default_factory=dict)
    tiny: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)  # published architecture sizes (emorl plan)
    download: str = ""  # how to get a model that is not on the Hugging Face hub (replaces `hf download`)
    path: Path | None = None

    @classmethod
    def from_file(cls, path: Path) -> "ZooCard":
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        kind = data.get("kind", "upstream")
        if kind not in KINDS:
            raise ValueError(f"zoo card {path}: kind must be one of {KINDS}, not {kind!r}")
        required = REQUIRED_FIELDS + (UPSTREAM_FIELDS if kind == "upstream" else ())
        missing = [key for key in required if key not in data]
        if missing:
            raise ValueError(f"zoo card {path} lacks {missing}")
        known = {f for f in cls.__dataclass_fields__ if f != "path"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"zoo card {path}: unknown fields {unknown}")
        data.setdefault("checkpoint_class", data["architecture"])
        return cls(**data, path=Path(path))


def list_cards(zoo_dir: Path | None = None, kind: str | None = None) -> list[ZooCard]:
    """Every card (of ``kind``, when given), sorted by name."""
    directory = Path(zoo_dir or ZOO_DIR)
    cards = sorted((ZooCard.from_file(p) for p in directory.glob("*.yaml")), key=lambda c: c.name)
    return [card for card in cards if kind is None or card.kind == kind]


def load_card(name: str, zoo_dir: Path | None = None) -> ZooCard:
    """The card of a zoo name (or of its ``hub_id``)."""
    cards = list_cards(zoo_dir)
    for card in cards:
        if name in (card.name, card.hub_id):
            return card
    raise ModelNotFoundError(
        f"{name!r} is not a model of the zoo ({', '.join(c.name for c in cards)}) "
        "nor an existing folder; pass a zoo name or the path of a transformers model folder"
    )


# -- resolving names to folders --------------------------------------------------------------------
def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now (not at import time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def models_dir() -> Path | None:
    value = os.environ.get("EMORL_MODELS")
    return Path(value).expanduser() if value else None


#: Files that mark a model folder: transformers' ``config.json``, FunASR's ``config.yaml``, a fairseq ``model.pt``.
MODEL_FOLDER_MARKERS = ("config.json", "config.yaml", "model.pt")


def _is_model_folder(path: Path) -> bool:
    return any((path / marker).is_file() for marker in MODEL_FOLDER_MARKERS)


def _from_hf_cache(hub_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(hub_id, local_files_only=True, cache_dir=str(hf_hub_cache())))
    except Exception:  # LocalEntryNotFoundError and friends: not cached
        return None
    return folder if _is_model_folder(folder) else None


def locate(card: ZooCard) -> Path | None:
    """The local folder of a zoo model, or ``None``."""
    base = models_dir()
    if base is not None:
        for candidate in (base / card.name, base / card.hub_id.replace("/", "--"), base / card.hub_id):
            if _is_model_folder(candidate):
                return candidate
    return _from_hf_cache(card.hub_id)


def _looks_like_path(text: str) -> bool:
    """Folder-like strings; ``owner/name`` (one slash) is read as a hub id."""
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text


def not_available_message(card: ZooCard) -> str:
    base = models_dir()
    target = base / card.name if base is not None else Path("$EMORL_MODELS") / card.name
    if card.download:  # not on the Hugging Face hub
        return "\n".join([
            f"model {card.name!r} is not available on this machine "
            f"($EMORL_MODELS/{card.name}: " + (f"{base / card.name} not found)" if base else "EMORL_MODELS is not set)"),
            "Get it on a machine with network access, then bring it here and set EMORL_MODELS:",
            f"  {card.download}",
            f"For a tiny random stand-in (tests, smoke runs): emorl zoo tiny {card.name} --out DIR",
        ])
    looked = [
        f"  $EMORL_MODELS/{card.name}: " + (f"{base / card.name} not found" if base else "EMORL_MODELS is not set"),
        f"  the Hugging Face cache: {hf_hub_cache()} has no snapshot of {card.hub_id}",
    ]
    return "\n".join([
        f"model {card.name!r} ({card.hub_id}) is not available on this machine; looked in:",
        *looked,
        "Get it on a machine with network access, then bring it here:",
        f"  hf download {card.hub_id} --local-dir {target}",
        f"    (older huggingface_hub: huggingface-cli download {card.hub_id} --local-dir {target})",
        "  and set EMORL_MODELS to the folder holding it; or download it into the Hugging Face cache",
        f"  (hf download {card.hub_id}) and copy that cache's models--{card.hub_id.replace('/', '--')} folder",
        f"  into {hf_hub_cache()}; or pass any local folder holding its config.json,",
        "  preprocessor_config.json and weights instead of the name.",
        f"For a tiny random stand-in (tests, smoke runs): emorl zoo tiny {card.name} --out DIR",
    ])


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A local model folder for a zoo name, a hub id of the zoo, or a path (used as is; ``$VARIABLES``
    such as ``$EMORL_MODELS/qwen2-audio-7b-instruct`` are expanded, so a checkpoint that names its
    base model that way finds it on any machine).

    Raises :class:`ModelNotAvailableError` (how to get it) or :class:`ModelNotFoundError`.
    """
    text = os.path.expandvars(os.fspath(name_or_path))  # "$EMORL_MODELS/name": portable in a checkpoint
    path = Path(text).expanduser()
    if path.exists():
        return path
    if isinstance(name_or_path, Path) or _looks_like_path(text):
        raise ModelNotFoundError(f"model folder {path} does not exist, give the model's folder or zoo name "
                                 "(a moved run: --model.init_args.model NEW_FOLDER overrides its checkpoint's)")
    card = load_card(text)
    found = locate(card)
    if found is None:
        where = f"$EMORL_MODELS ({models_dir()})" if models_dir() else "$EMORL_MODELS (not set)"
        raise ModelNotAvailableError(
            not_available_message(card),
            one_line=f"model {card.name!r} ({card.hub_id}) is not on this machine (looked in {where} and the "
                     f"Hugging Face cache), put it in $EMORL_MODELS/{card.name} or pass its local folder "
                     f"(--verbose: how to download it; `emorl zoo tiny {card.name} --out DIR`: a tiny stand-in)")
    return found


def card_for_path(path: str | os.PathLike) -> ZooCard | None:
    """The card whose name is this folder's (or whose architecture its config names), if any."""
    import json

    path = Path(path)
    cards = list_cards()
    for card in cards:
        if path.name == card.name:
            return card
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except OSError:
        return None
    architectures = set(config.get("architectures") or [])
    for card in cards:
        if card.checkpoint_class in architectures:
            return card
    return None


# -- `emorl zoo list` ------------------------------------------------------------------------------
def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _reference_cell(card: ZooCard, corpus: str) -> str:
    scores = (card.reference.get("in_corpus") or {}).get(corpus)
    return f"{scores['ua']:.2f}/{scores['wa']:.2f}/{scores['f1']:.2f}" if scores else "-"


def list_main() -> int:
    """Print the zoo: name, hub id, architecture, dim, layers, EmoBox UA/WA/F1, where it is found."""
    rows = [["name", "hub id", "architecture", "dim", "layers", "MELD UA/WA/F1", "IEMOCAP UA/WA/F1", "local copy"]]
    for card in list_cards(kind="upstream"):
        found = locate(card)
        rows.append([
            card.name, card.hub_id, card.architecture, str(card.feature_dim), str(card.num_layers),
            _reference_cell(card, "meld"), _reference_cell(card, "iemocap"),
            str(found) if found else "not found (see `emorl zoo tiny` or docs/zoo.md)",
        ])
    print(_table(rows))
    lalm_rows = [["name", "hub id", "family", "loaded class", "licence", "local copy"]]
    for card in list_cards(kind="lalm"):
        found = locate(card)
        lalm_rows.append([
            card.name, card.hub_id, card.backend, card.architecture, card.licence,
            str(found) if found else "not found (see `emorl zoo tiny` or docs/lalm.md)",
        ])
    if len(lalm_rows) > 1:
        print("\naudio-language models (docs/lalm.md):")
        print(_table(lalm_rows))
    return 0

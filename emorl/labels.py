"""Emotion labels: canonical names, each corpus's label set, synonyms, and answer parsing.

Every other part of emorl speaks in *canonical* emotion names (lower-case English words such as
``"happy"`` or ``"angry"``). Corpora map their raw labels onto these names exactly as EmoBox does
(``../shared/data/emobox/<corpus>/label_map.json``), and a label set's order is EmoBox's class
order, so class ids agree with EmoBox's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

from emorl.answer_scan import block_contents, replace_blocks

#: The names emorl knows. Corpora outside these (EmoBox has 32) may add their own lower-case
#: names; everything downstream treats a label as an opaque canonical string.
CANONICAL_EMOTIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "fear",
    "disgust",
    "surprise",
    "calm",
    "frustrated",
    "excited",
    "contempt",
    "other",
)

#: Words a model (or a corpus) may use for a canonical emotion. Keys are matched as whole words,
#: case-insensitively; each canonical name is implicitly its own synonym.
SYNONYMS: Mapping[str, str] = {
    "joy": "happy",
    "joyful": "happy",
    "happiness": "happy",
    "glad": "happy",
    "sadness": "sad",
    "sorrow": "sad",
    "sorrowful": "sad",
    "unhappy": "sad",
    "anger": "angry",
    "mad": "angry",
    "furious": "angry",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "fright": "fear",
    "frightened": "fear",
    "disgusted": "disgust",
    "surprised": "surprise",
    "astonished": "surprise",
    "astonishment": "surprise",
    "calmness": "calm",
    "frustration": "frustrated",
    "excitement": "excited",
    "contemptuous": "contempt",
    "neutrality": "neutral",
}


class UnknownLabelError(ValueError):
    """A raw corpus label, or a label name, that the label set does not know."""


def canonical_label(name: str) -> str:
    """Map a label name or synonym to its canonical name.

    ``"Joy"``, ``" happiness "`` and ``"HAPPY"`` all give ``"happy"``. A name that is neither
    canonical nor a known synonym is returned lower-cased and stripped, so corpora with their own
    classes (EmoBox has e.g. ``"Boredom"``) keep working; use :func:`is_known_emotion` to tell.
    """
    key = re.sub(r"[\s_\-]+", " ", name.strip().lower())
    if key in CANONICAL_EMOTIONS:
        return key
    return SYNONYMS.get(key, key)


def is_known_emotion(name: str) -> bool:
    """True when ``name`` is a canonical emotion or one of its synonyms."""
    return canonical_label(name) in CANONICAL_EMOTIONS


@dataclass(frozen=True)
class LabelSet:
    """The classes of one corpus (or task) and how its raw labels map onto them.

    ``classes`` holds canonical names in class-id order; ``raw_map`` maps every raw label the
    corpus uses (``"exc"``, ``"Fearful"``, ``"sa"``) to a canonical name in ``classes``.
    """

    name: str
    classes: tuple[str, ...]
    raw_map: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"label set {self.name!r} repeats a class: {self.classes}")
        stray = sorted(set(self.raw_map.values()) - set(self.classes))
        if stray:
            raise ValueError(f"label set {self.name!r} maps raw labels onto unknown classes {stray}")

    def __len__(self) -> int:
        return len(self.classes)

    def __contains__(self, label: object) -> bool:
        return label in self.classes

    def index(self, label: str) -> int:
        """Class id of a canonical label; raises :class:`UnknownLabelError` for others."""
        try:
            return self.classes.index(label)
        except ValueError:
            raise UnknownLabelError(
                f"label {label!r} is not in the {self.name} label set {list(self.classes)}"
            ) from None

    def from_raw(self, raw: str) -> str:
        """Canonical label of a raw corpus label; raises :class:`UnknownLabelError` for others."""
        if raw in self.raw_map:
            return self.raw_map[raw]
        raise UnknownLabelError(
            f"raw label {raw!r} is not in the {self.name} label map {sorted(self.raw_map)}"
        )

    @classmethod
    def from_emobox_map(cls, name: str, label_map: Mapping[str, str]) -> "LabelSet":
        """Build from an EmoBox ``label_map.json`` (raw label -> class name such as ``"Happy"``).

        Class order is the order in which class names first appear, as in EmoBox. The map is
        checked first (:func:`validate_label_map`).
        """
        raw_map = {raw: canonical_label(cls_name) for raw, cls_name in validate_label_map(label_map, name).items()}
        classes = tuple(dict.fromkeys(raw_map.values()))
        return cls(name=name, classes=classes, raw_map=raw_map)


class LabelMapError(ValueError):
    """A label map that cannot be used; the message names the map and the offending key."""


def _json_type(value: object) -> str:
    names = {list: "a list", tuple: "a list", int: "a number", float: "a number", bool: "true/false",
             str: "a string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def validate_label_map(label_map: object, source: str = "label map") -> dict[str, str]:
    """``label_map`` as ``{raw label: class name}``, or :class:`LabelMapError` naming what is wrong.

    It must be a JSON object (not a list or a number) whose every value is a non-empty class name:
    a key mapping to null, ``""`` or a non-string maps to nothing and is refused by name.
    """
    if not isinstance(label_map, Mapping):
        raise LabelMapError(
            f"{source}: expected a JSON object of raw label -> class name, not {_json_type(label_map)}"
        )
    for raw, cls_name in label_map.items():
        if not isinstance(cls_name, str) or not cls_name.strip():
            raise LabelMapError(
                f"{source}: key {raw!r} maps to nothing ({_json_type(cls_name)}); expected a class name"
            )
    return {str(raw): cls_name for raw, cls_name in label_map.items()}


def check_map_classes(label_set: "LabelSet", classes: Iterable[str], source: str = "label map") -> None:
    """Refuse a map that creates a class outside ``classes`` (what the corpus has), naming the key."""
    allowed = list(classes)
    for raw, cls_name in label_set.raw_map.items():
        if cls_name not in allowed:
            raise LabelMapError(
                f"{source}: key {raw!r} maps to {cls_name!r}, a class the corpus does not have "
                f"(its classes: {allowed}); remove the key or map it to one of them"
            )


#: EmoBox's label maps for the four corpora of the papers, in EmoBox's class order.
CORPUS_LABELS: Mapping[str, LabelSet] = {
    "iemocap": LabelSet(
        "iemocap",
        ("neutral", "happy", "angry", "sad"),
        {"neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad", "exc": "happy"},
    ),
    "meld": LabelSet(
        "meld",
        ("neutral", "happy", "sad", "surprise", "disgust", "angry", "fear"),
        {
            "neutral": "neutral",
            "joy": "happy",
            "sadness": "sad",
            "surprise": "surprise",
            "disgust": "disgust",
            "anger": "angry",
            "fear": "fear",
        },
    ),
    "ravdess": LabelSet(
        "ravdess",
        ("angry", "surprise", "sad", "disgust", "happy", "calm", "neutral", "fear"),
        {
            "Angry": "angry",
            "Surprised": "surprise",
            "Sad": "sad",
            "Disgust": "disgust",
            "Happy": "happy",
            "Calm": "calm",
            "Neutral": "neutral",
            "Fearful": "fear",
        },
    ),
    "savee": LabelSet(
        "savee",
        ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"),
        {
            "a": "angry",
            "d": "disgust",
            "f": "fear",
            "h": "happy",
            "n": "neutral",
            "sa": "sad",
            "su": "surprise",
        },
    ),
}

#: EmoBox's cross-corpus track (track 2): four classes shared by every corpus.
CROSS_CORPUS_LABELS = LabelSet(
    "track2",
    ("angry", "happy", "neutral", "sad"),
    {"angry": "angry", "happy": "happy", "neutral": "neutral", "sad": "sad"},
)


#: EmotionThinker's label set: its released model answers with 9 options, which the sources at
#: hand do not name (docs/ptr.md). emorl's choice: Ekman's seven basic emotions (anger, contempt,
#: disgust, fear, happiness, sadness, surprise), neutral, and RAVDESS's calm; it holds every class
#: of IEMOCAP, MELD, RAVDESS and SAVEE, so any of them trains on it
#: (``EmoDataModule(class_space="emotionthinker")``).
EMOTIONTHINKER_LABELS = LabelSet(
    "emotionthinker",
    ("neutral", "happy", "sad", "angry", "fear", "disgust", "surprise", "contempt", "calm"),
)

#: Label sets by name that a corpus can be trained on as a whole (``EmoDataModule(class_space=...)``).
NAMED_LABEL_SETS: Mapping[str, LabelSet] = {"emotionthinker": EMOTIONTHINKER_LABELS, "track2": CROSS_CORPUS_LABELS}


def get_named_label_set(name: str) -> LabelSet:
    """A label set of :data:`NAMED_LABEL_SETS` (``emotionthinker``, ``track2``)."""
    try:
        return NAMED_LABEL_SETS[name.lower()]
    except KeyError:
        raise UnknownLabelError(f"no label set named {name!r}; known: {sorted(NAMED_LABEL_SETS)}") from None


def get_label_set(corpus: str) -> LabelSet:
    """The :class:`LabelSet` of a known corpus (``iemocap``, ``meld``, ``ravdess``, ``savee``)."""
    try:
        return CORPUS_LABELS[corpus.lower()]
    except KeyError:
        raise UnknownLabelError(
            f"no built-in label set for corpus {corpus!r}; known: {sorted(CORPUS_LABELS)}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Parsing a model's answer
# ---------------------------------------------------------------------------------------------

#: How an answer is read for a label (:func:`parse_answer`): ``strict`` for the tagged formats
#: (IR, EUR, ESR: the last ``<answer>`` block only, naming exactly one option), ``lenient`` for
#: the untagged zero-shot prompts (``direct``, ``cot``: a label named anywhere may do).
READINGS: tuple[str, ...] = ("strict", "lenient")

_CUE = re.compile(
    r"\b(?:answer|emotion|label|prediction|predicted|classification)\b\s*(?:is|was|would be)?"
    r"\s*[:=\-]*\s*[\"'*(\[]*",
    re.IGNORECASE,
)


def _vocabulary(label_set: Iterable[str]) -> dict[str, str]:
    """Surface word -> canonical label, for every label of the set and its synonyms."""
    return _cached_vocabulary(tuple(label_set))


@lru_cache(maxsize=64)
def _cached_vocabulary(label_set: tuple[str, ...]) -> dict[str, str]:
    wanted = {canonical_label(label) for label in label_set}
    vocab = {label: label for label in wanted}
    vocab.update({word: canon for word, canon in SYNONYMS.items() if canon in wanted})
    return vocab


_LETTERS = re.compile("[a-z]+")


def _word_pattern(word: str) -> str:
    return r"(?<![a-z])" + re.escape(word).replace(r"\ ", r"[\s_\-]+") + r"(?![a-z])"


def _mentions(text: str, vocab: Mapping[str, str]) -> list[tuple[int, str]]:
    """(position, canonical label) for every whole-word mention of a vocabulary word in text.

    When every word is letters only, a whole-word mention is exactly a maximal run of letters that
    is a vocabulary word: one pass over the runs finds what a regex per word finds. Otherwise (a
    label of several words, or with other characters) a regex per word.
    """
    lowered = text.lower()
    if all(_LETTERS.fullmatch(word) for word in vocab):
        return [(m.start(), vocab[m.group(0)]) for m in _LETTERS.finditer(lowered) if m.group(0) in vocab]
    found: list[tuple[int, str]] = []
    for word, canon in vocab.items():
        found.extend((m.start(), canon) for m in re.finditer(_word_pattern(word), lowered))
    return sorted(found)


def _parse_span(text: str, vocab: Mapping[str, str], *, first_wins: bool) -> str | None:
    mentions = _mentions(text, vocab)
    if not mentions:
        return None
    distinct = list(dict.fromkeys(canon for _, canon in mentions))
    if len(distinct) == 1 or first_wins:
        return distinct[0]
    # Several labels in free text ("not angry, rather sad"): trust an explicit cue, else give up.
    for cue in _CUE.finditer(text):
        after = _mentions(text[cue.end() : cue.end() + 40], vocab)
        if after and after[0][0] == 0:
            return after[0][1]
    return None


def parse_answer(text: str | None, label_set: Sequence[str], reading: str = "lenient") -> str | None:
    """Pull the predicted emotion out of a model's answer: the one parser of training and evaluation.

    ``reading="strict"`` (the tagged formats IR, EUR, ESR: :attr:`emorl.prompts.PromptFormat.reading`):
    the label comes from the last ``<answer>...</answer>`` block only (tags in any case), which
    must name exactly one option of ``label_set`` (a label and its synonyms count as one:
    ``"<answer>Joy (happy)</answer>"`` gives ``"happy"``); no block, a block naming no option or
    two different options (``"<answer>sad or angry</answer>"``) gives ``None``: unparsed.

    ``reading="lenient"`` (the untagged zero-shot prompts ``direct`` and ``cot``), in order of evidence:

    1. the last ``<answer>...</answer>`` block; inside it the first label or synonym mentioned wins
       (``"<answer> Joy. </answer>"`` gives ``"happy"``);
    2. without a usable answer block, the rest of the text: a single distinct label mentioned
       wins; with several, a label right after a cue such as ``"emotion is"`` or ``"Answer:"``
       wins; otherwise the answer is ambiguous.

    Matching is case-insensitive, on whole words, tolerant of surrounding spaces and punctuation,
    and maps synonyms (``joy``, ``sadness``, ``fearful``, ...) to canonical names. Only labels of
    ``label_set`` (canonical names) can be returned; ``None`` means nothing usable was found.
    Time is linear in the answer's length (:mod:`emorl.answer_scan`).
    """
    if reading not in READINGS:
        raise ValueError(f"unknown answer reading {reading!r}; choose one of {', '.join(READINGS)}")
    if not text:
        return None
    blocks = block_contents(text)
    if reading == "strict" and not blocks:
        return None
    vocab = _vocabulary(label_set)
    if reading == "strict":
        named = {canon for _, canon in _mentions(blocks[-1], vocab)}
        return named.pop() if len(named) == 1 else None
    if blocks:
        parsed = _parse_span(blocks[-1], vocab, first_wins=True)
        if parsed is not None:
            return parsed
    return _parse_span(replace_blocks(text, lambda _: " ") if blocks else text, vocab, first_wins=False)

"""Every prompt emorl sends to an audio-language model, each next to the shape that checks its answers.

A prompt is the clip's audio followed by a question that lists the corpus's emotion options and
asks for one of five answer formats (:data:`FORMATS`):

- ``direct``: zero-shot, "which emotion?" (EMO-RL Table 1, "Direct Inference");
- ``cot``: zero-shot chain of thought, reason first then answer ("CoT Inference");
- ``ir``: implicit reasoning, only ``<answer>LABEL</answer>`` (EMO-RL's Q_IR);
- ``eur``: explicit unstructured reasoning, ``<think>...</think><answer>LABEL</answer>`` (Q_EUR);
- ``esr``: explicit structured reasoning (Q_ESR): the think block holds, in order, the four tags
  of :data:`ESR_TAGS`, then the answer.

ESR's four tags. The paper asks for "four additional format constraint tags" covering the
textual side (verbatim transcription, key words) and the prosodic side (intonation, tempo,
intensity, voice quality), then a synthesis of the two; it does not print their names. emorl
names them ``<transcript>`` (what is said), ``<keywords>`` (the emotionally telling words),
``<prosody>`` (pitch and intonation, rhythm and speed, volume, voice quality) and
``<synthesis>`` (both combined into a judgement). Change them here, in one place.

Format checks (:meth:`PromptFormat.matches`) are binary, over the *whole* answer, as the paper's
format rewards are: whitespace between and around blocks is allowed, nothing else is; every
block must hold some non-space text; no block may hold ``<think>`` or ``<answer>`` tags, and the
answer and ESR's blocks may not hold ESR's tags either (an ESR answer is thus also a valid EUR
answer, whose think block is free). ``direct`` and ``cot`` accept any
non-empty text (zero-shot answers are parsed, not format-checked). Checks take time linear in the
answer's length (:mod:`emorl.answer_scan`: a tag scan, then a walk over the tags), so an answer
cut at ``max_new_tokens`` inside a block costs no more than any other.

Options are the label set's canonical names (``emorl.labels``), in the label set's order or,
with ``shuffle_options``, in a per-example order drawn from a seeded generator (to remove
position bias); answers are parsed back with :func:`emorl.labels.parse_answer`, which also
accepts synonyms ("joy" for ``happy``), in the format's :attr:`PromptFormat.reading`.

:class:`FormatMix` draws each training clip's format from several (SFT's ``extra_formats``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from emorl.answer_scan import FREE, TEXT, WS, Shape, fits
from emorl.errors import EmorlError

#: The four ESR tags, in the order the think block must hold them.
ESR_TAGS: tuple[str, ...] = ("transcript", "keywords", "prosody", "synthesis")

#: What each ESR tag asks for (used in the ESR instruction).
ESR_TAG_MEANINGS: dict[str, str] = {
    "transcript": "what the speaker says, word for word",
    "keywords": "the words or phrases that carry emotion",
    "prosody": "the pitch and intonation, rhythm and speed, volume and voice quality",
    "synthesis": "how the content and the prosody together point to one emotion",
}

#: The system prompt of every format unless a config sets another (Qwen2-Audio's own default).
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

#: Tag names every answer is scanned for (:func:`emorl.answer_scan.find_tags`).
_TAG_NAMES = ("think", "answer", *ESR_TAGS)
_ANSWER_TAGS = (("answer", False), ("answer", True))


def _shape(think: tuple[tuple[str, bool], ...], think_gaps: tuple[str, ...], nested: tuple[str, ...] = ()) -> Shape:
    """A format's :class:`~emorl.answer_scan.Shape`: optional think tags, then ``<answer>`` (text) ``</answer>``.

    Outside the blocks only whitespace; every block holds a non-space character and no tag of
    :data:`_TAG_NAMES` but ``nested`` ones (EUR's free think block may hold ESR's tags).
    """
    tags = (*think, *_ANSWER_TAGS)
    gaps = (*think_gaps, TEXT, WS)
    return Shape(tags, gaps, _TAG_NAMES, frozenset(nested), answer_gap=len(gaps) - 2)


def _esr_shape() -> Shape:
    """ESR: ``<think>``, the four :data:`ESR_TAGS` blocks in order (whitespace between), ``</think>``, the answer."""
    tags: list[tuple[str, bool]] = [("think", False)]
    gaps = [WS]
    for tag in ESR_TAGS:
        tags += [(tag, False), (tag, True)]
        gaps += [WS, TEXT]
    tags.append(("think", True))
    gaps += [WS, WS]  # before </think>, then before <answer>
    return _shape(tuple(tags), tuple(gaps))


_IR_SHAPE = _shape((), (WS,))
_EUR_SHAPE = _shape((("think", False), ("think", True)), (WS, FREE, WS), nested=ESR_TAGS)
_ESR_SHAPE = _esr_shape()


@dataclass(frozen=True)
class PromptFormat:
    """One answer format: the instruction that asks for it and the shape that checks it.

    Attributes:
        name: ``direct``, ``cot``, ``ir``, ``eur`` or ``esr``.
        instruction: the text after the options; ``{options}`` is not used here (see
            :func:`build_question`).
        shape: the :class:`~emorl.answer_scan.Shape` an answer must have in full (``None``: any
            non-empty text), checked in linear time (:func:`emorl.answer_scan.fits`).
        reasoning: the format asks for reasoning before the answer.
        reading: how its answers are read for a label (:func:`emorl.labels.parse_answer`):
            ``strict`` (the tagged formats: the ``<answer>`` block only) or ``lenient`` (the
            untagged zero-shot prompts: a label named anywhere).
    """

    name: str
    instruction: str
    shape: Shape | None
    reasoning: bool
    reading: str = "strict"

    def matches(self, text: str | None) -> bool:
        """True when the whole ``text`` is in this format (the binary format reward)."""
        if not text or not text.strip():
            return False
        if self.shape is None:
            return True
        return fits(text, self.shape)[0]

    def answer_span(self, text: str | None) -> str | None:
        """The text inside ``<answer>`` when ``text`` matches the format, else ``None``."""
        if not text or self.shape is None:
            return None
        ok, answer = fits(text, self.shape)
        return answer if ok else None


_ESR_STEPS = "; ".join(f"<{tag}> {meaning} </{tag}>" for tag, meaning in ESR_TAG_MEANINGS.items())

FORMATS: dict[str, PromptFormat] = {
    "direct": PromptFormat(
        name="direct",
        instruction="Answer with the emotion only, one word from the options.",
        shape=None,
        reasoning=False,
        reading="lenient",
    ),
    "cot": PromptFormat(
        name="cot",
        instruction=(
            "Think step by step: consider what is said and how it is said (pitch, speed, volume, "
            "voice quality), then give the emotion, one word from the options, as "
            "<answer>emotion</answer>."
        ),
        shape=None,
        reasoning=True,
        reading="lenient",
    ),
    "ir": PromptFormat(
        name="ir",
        instruction="Output only the answer, in the format <answer>emotion</answer>.",
        shape=_IR_SHAPE,
        reasoning=False,
    ),
    "eur": PromptFormat(
        name="eur",
        instruction=(
            "First reason about the emotion inside <think> </think>, then give the final answer inside "
            "<answer> </answer>, in the format <think>reasoning</think><answer>emotion</answer>."
        ),
        shape=_EUR_SHAPE,
        reasoning=True,
    ),
    "esr": PromptFormat(
        name="esr",
        instruction=(
            "First reason inside <think> </think> in four steps, each in its own tags: "
            f"{_ESR_STEPS}. Then give the final answer inside <answer> </answer>, in the format "
            "<think><transcript>...</transcript><keywords>...</keywords><prosody>...</prosody>"
            "<synthesis>...</synthesis></think><answer>emotion</answer>."
        ),
        shape=_ESR_SHAPE,
        reasoning=True,
    ),
}

QUESTION = "What is the emotion of the speaker in this audio? The options are: {options}."

#: EmotionThinker-Base's prosody-description task (:mod:`emorl.prosody.task`): the voice's pitch,
#: loudness and speaking rate from the audio alone, in the caption's words. Its answers are read by
#: :func:`emorl.prosody.task.read_description`, not by a format regex.
PROSODY_QUESTION = (
    "Describe the speaker's voice in this audio: its pitch (low, normal or high), its loudness "
    "(soft, normal or loud) and its speaking rate (slow, normal or fast). Answer in the format "
    "pitch: level; loudness: level; rate: level."
)


def get_format(name: str) -> PromptFormat:
    """The :class:`PromptFormat` called ``name`` (case-insensitive); a clear error for others."""
    try:
        return FORMATS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown prompt format {name!r}; choose one of {', '.join(FORMATS)}") from None


def option_order(options: Sequence[str], shuffle: bool = False, rng: random.Random | None = None) -> list[str]:
    """The options in label-set order, or shuffled with ``rng`` (a seeded ``random.Random``)."""
    ordered = list(options)
    if not ordered:
        raise ValueError("a prompt needs at least one emotion option")
    if shuffle:
        (rng or random.Random(0)).shuffle(ordered)
    return ordered


def build_question(
    format_name: str,
    options: Sequence[str],
    shuffle_options: bool = False,
    rng: random.Random | None = None,
    question: str = QUESTION,
) -> str:
    """The text that follows the audio: the question with its options, then the format's instruction.

    >>> build_question("ir", ["neutral", "happy"])
    'What is the emotion of the speaker in this audio? The options are: neutral, happy. Output only the answer, in the format <answer>emotion</answer>.'
    """
    fmt = get_format(format_name)
    listed = ", ".join(option_order(options, shuffle_options, rng))
    return f"{question.format(options=listed)} {fmt.instruction}"


def build_messages(question: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> list[dict]:
    """Chat messages for one clip: an optional system turn, then a user turn of audio + question.

    The audio item is ``{"type": "audio", "audio": "<clip>"}``: the chat templates of
    Qwen2-Audio and Qwen2.5-Omni put their audio placeholder tokens where an item with an
    ``audio`` key stands; the waveform itself goes to the processor separately.
    """
    messages: list[dict] = []
    if system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    messages.append({
        "role": "user",
        "content": [{"type": "audio", "audio": "<clip>"}, {"type": "text", "text": question}],
    })
    return messages


def target_text(format_name: str, label: str, rationale: str | None = None,
                structured: dict[str, str] | None = None) -> str:
    """The answer an SFT target (or a format test) expects for ``label``.

    ``ir`` (and ``direct``): ``<answer>label</answer>``. ``eur`` / ``cot``: the ``rationale`` in
    ``<think>`` (required). ``esr``: the four :data:`ESR_TAGS` from ``structured`` (all required).
    """
    fmt = get_format(format_name)
    answer = f"<answer>{label}</answer>"
    if fmt.name in ("ir", "direct"):
        return answer
    if fmt.name in ("eur", "cot"):
        if not rationale or not rationale.strip():
            raise ValueError(f"a {fmt.name} target needs a rationale for label {label!r}")
        return f"<think>{rationale.strip()}</think>{answer}"
    missing = [tag for tag in ESR_TAGS if not (structured or {}).get(tag, "").strip()]
    if missing:
        raise ValueError(f"an esr target needs every ESR tag; missing {missing}")
    blocks = "".join(f"<{tag}>{structured[tag].strip()}</{tag}>" for tag in ESR_TAGS)  # type: ignore[index]
    return f"<think>{blocks}</think>{answer}"


class PromptBuilder:
    """Chat messages for clips: the question listing ``class_names`` and the format's instruction.

    Shuffled options are drawn from a generator seeded by (``seed``, clip key), so a clip gets the
    same order whatever its batch, rank or run.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        prompt_format: str = "ir",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        shuffle_options: bool = False,
        seed: int = 0,
    ) -> None:
        self.class_names = list(class_names)
        self.format = get_format(prompt_format)
        self.system_prompt = system_prompt
        self.shuffle_options = shuffle_options
        self.seed = seed

    def _rng(self, key: str) -> random.Random:
        digest = hashlib.sha1(f"{self.seed}|{key}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "little"))

    def question(self, key: str, format_name: str | None = None) -> str:
        """The question for the clip ``key`` (its options in its own order when shuffled), asking for
        ``format_name`` (default: the builder's format)."""
        return build_question(format_name or self.format.name, self.class_names, self.shuffle_options, self._rng(key))

    def messages(self, keys: Sequence[str], formats: Sequence[str] | None = None) -> list[list[dict]]:
        """One chat (system turn, audio + question) per clip key; ``formats``: each clip's format
        (default: the builder's format for all)."""
        formats = formats or [self.format.name] * len(keys)
        return [build_messages(self.question(key, fmt), self.system_prompt) for key, fmt in zip(keys, formats)]


@dataclass(frozen=True)
class FormatMix:
    """Which answer format each training clip is asked for, per epoch: a weighted draw over formats.

    The first format is the main one (validation and test ask for it alone); the others are mixed
    into training so that one model learns several answer formats (e.g. ESR and IR, so that GRPO
    with either prompt starts from the same warm start). A clip's format in an epoch is a draw from
    a hash of (``seed``, epoch, clip key): the same in every run, batch order and rank, and over
    many clips the shares follow the weights.
    """

    weights: dict[str, float]
    seed: int = 0

    @classmethod
    def from_config(cls, main: str, extra: Mapping[str, float] | Sequence[str] | None, seed: int = 0) -> FormatMix:
        """``main`` (weight 1) plus ``extra``: a list of format names (weight 1 each) or a mapping
        name -> weight (> 0); ``None`` or empty: ``main`` alone. Anything else (an unknown or repeated
        format, a weight not above 0) is an :class:`~emorl.errors.EmorlError` (one line)."""
        main_format = get_format(main).name
        if extra is None:
            items: list[tuple[Any, Any]] = []
        elif isinstance(extra, Mapping):
            items = list(extra.items())
        elif isinstance(extra, Sequence) and not isinstance(extra, str):
            items = [(name, 1.0) for name in extra]
        else:
            raise EmorlError(f"extra_formats must be a list of format names or a mapping name -> weight, not {extra!r}")
        weights = {main_format: 1.0}
        for name, weight in items:
            try:
                fmt = get_format(str(name)).name
            except ValueError as err:
                raise EmorlError(f"extra_formats: {err}") from None
            if fmt in weights:
                raise EmorlError(f"extra_formats: format {fmt!r} is listed twice (or is prompt_format)")
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
                raise EmorlError(f"extra_formats: the weight of format {fmt!r} must be a number > 0, not {weight!r}")
            weights[fmt] = float(weight)
        return cls(weights, int(seed))

    @property
    def main(self) -> str:
        """The format validation and test ask for (the first one)."""
        return next(iter(self.weights))

    @property
    def mixed(self) -> bool:
        return len(self.weights) > 1

    def choose(self, key: str, epoch: int) -> str:
        """The format of clip ``key`` in training ``epoch``: a draw from the weights, by hash (no RNG state)."""
        if not self.mixed:
            return self.main
        digest = hashlib.sha1(f"format|{self.seed}|{epoch}|{key}".encode()).digest()
        point = int.from_bytes(digest[:8], "little") / 2**64 * sum(self.weights.values())
        for name, weight in self.weights.items():
            point -= weight
            if point < 0:
                return name
        return next(reversed(self.weights))  # rounding at the very top of the interval

    def plan(self, keys: Sequence[str], epoch: int | None) -> list[str]:
        """Each clip's format in training ``epoch``; ``None`` (validation / test): the main format."""
        return [self.main if epoch is None else self.choose(key, epoch) for key in keys]

"""The reasoning judge of GRPO-PTR: a text LM that grades an answer's reasoning on a rubric.

EmotionThinker scores the reasoning of every sampled answer with a reward model on several
criteria. emorl's judge is any local instruction-tuned causal LM (:class:`emorl.textlm.TextLM`)
prompted with the rubric below; it cannot hear the clip, so it is given what the corpus
measured instead: the transcript and the clip's prosody caption and bins (``emorl data
prosody``). The true label is **not** shown: the judge grades how well the reasoning is
grounded and argued, and GRPO-PTR's trust weight (:mod:`emorl.rl.ptr`) ties reasoning to
outcome.

The prompt (:func:`judge_messages`) asks for one line per criterion, ``criterion: <1-5>``;
:func:`parse_judge_output` reads those lines into ``[0, 1]`` (``(s - 1) / 4``). A criterion the
judge left out, or scored with something that is not a number on the 1-5 scale, counts as
missing: it scores 0 and the answer is counted ``unparsable`` (:class:`Judge`).

Parsing rules (one criterion per line; ``;`` and ``", "`` before a word also split):

- the name may differ in case, use spaces / ``_`` / ``-`` between words, be wrapped in markdown
  (``**Fluency**:``), follow a bullet or a number (``- ``, ``2.``) or be one of the criterion's
  aliases (``Interpretive quality``);
- the separator is ``:``, ``=``, ``-``, an en or em dash, or nothing;
- the score is an integer or a decimal, optionally ``/5`` or ``out of 5``; text after it is
  ignored (``4 - well grounded``);
- a score outside ``[1, 5]`` (``0``, ``7``, ``9/10``), or over another denominator, is
  **rejected** (the criterion stays missing) rather than clipped: a number off the scale means
  the judge did not follow the rubric, and clipping would make up a score;
- the first valid line of a criterion wins.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

SCALE_MIN, SCALE_MAX = 1.0, 5.0


@dataclass(frozen=True)
class Criterion:
    """One rubric criterion: its name (what the judge writes), a one-line description, aliases."""

    name: str
    description: str
    aliases: tuple[str, ...] = ()


#: The rubric (EmotionThinker's criteria as summarised publicly; wording emorl's).
RUBRIC: tuple[Criterion, ...] = (
    Criterion(
        "prosody_alignment",
        "the reasoning's claims about the voice (pitch, loudness, rate, pauses, voice quality) and the "
        "words agree with the measured prosody and the transcript; invented or contradicted cues score low",
        ("prosody", "alignment", "prosodic alignment", "factual alignment", "prosody and content alignment"),
    ),
    Criterion(
        "interpretation",
        "the reasoning explains convincingly how the cues point to the chosen emotion and away from close ones",
        ("interpretive quality", "interpretation quality", "interpretive"),
    ),
    Criterion(
        "completeness",
        "the reasoning covers both what is said and how it is said (every available prosodic cue that matters)",
        ("complete", "coverage"),
    ),
    Criterion(
        "fluency",
        "the reasoning is fluent, well structured and concise, without repetition or contradiction",
        ("fluency structure", "fluency and structure", "structure"),
    ),
)

SYSTEM_PROMPT = (
    "You are a strict grader of emotion-recognition reasoning about speech. You cannot hear the audio; "
    "instead you are given the transcript and the prosody measured from the recording. Grade only the "
    "reasoning, not whether the final emotion is right."
)


def _describe_bins(bins: Mapping | None) -> str:
    if not bins:
        return "(not measured)"
    return ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in bins.items() if value != "unknown") \
        or "(not measured)"


def judge_messages(
    answer: str,
    row: Mapping | None,
    label_options: Sequence[str] | None = None,
    criteria: Sequence[Criterion] = RUBRIC,
) -> list[dict]:
    """The judge's chat conversation (system + user) for one answer.

    The user message gives, in this order: the emotion options (when known), the transcript
    (``row["transcript"]``), the measured prosody caption (``row["prosody"]["caption"]``) and
    bins (``row["prosody"]["bins"]``, low / normal / high against the corpus; unknown ones left
    out), the answer to grade, the rubric (one line per criterion with its description) and the
    reply format: exactly one line per criterion, ``name: <1-5>``, nothing else. Missing fields
    read ``(not available)`` / ``(not measured)``.
    """
    row = row or {}
    prosody = row.get("prosody") or {}
    transcript = str(row.get("transcript") or "").strip() or "(not available)"
    caption = str(prosody.get("caption") or "").strip() or "(not measured)"
    lines = []
    if label_options:
        lines.append("Emotion options: " + ", ".join(label_options))
    lines += [
        f"Transcript: {transcript}",
        f"Measured prosody: {caption}",
        f"Prosody bins (against the corpus): {_describe_bins(prosody.get('bins'))}",
        "",
        "Answer to grade:",
        "<<<",
        answer.strip(),
        ">>>",
        "",
        "Score the answer's reasoning from 1 (very poor) to 5 (excellent) on each criterion:",
    ]
    lines += [f"- {c.name}: {c.description}" for c in criteria]
    lines += ["", "Reply with exactly these lines and nothing else:"]
    lines += [f"{c.name}: <1-5>" for c in criteria]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


@dataclass
class JudgeScores:
    """One answer's grades.

    Attributes:
        scores: criterion -> ``[0, 1]`` (``(s - 1) / 4``), 0 for a missing one.
        parsed: every criterion was found.
        missing: the criteria not found (or scored off the scale).
    """

    scores: dict[str, float]
    parsed: bool
    missing: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        """The reasoning reward: the mean over the criteria (missing ones count 0)."""
        return sum(self.scores.values()) / len(self.scores) if self.scores else 0.0


_LINE = re.compile(
    r"^\s*(?:[-+\u2022]\s*|\d+\s*[.)]\s*)?"          # bullet or list number
    r"(?P<name>[a-z][a-z \-]*?)\s*"                   # criterion name
    r"(?:\([^)]*\)\s*)?"                              # a parenthesised remark after the name
    r"(?:[:=\-\u2013\u2014]\s*)?"                     # separator
    r"(?:score\s*(?:of|is|:)?\s*)?"
    r"(?P<value>\d+(?:\.\d+)?)"
    r"(?:\s*(?:/|out\s+of)\s*(?P<scale>\d+(?:\.\d+)?))?"
    r"(?![\d.]*\d)",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"\n|;|,\s+(?=[A-Za-z*_])")


def _normalise(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def _lookup(criteria: Sequence[Criterion]) -> dict[str, str]:
    table = {}
    for criterion in criteria:
        for name in (criterion.name, *criterion.aliases):
            table.setdefault(_normalise(name), criterion.name)
    return table


def _read_score(value: str, scale: str | None) -> float | None:
    """A 1-5 score -> [0, 1]; None when off the scale (rejected, see the module docstring)."""
    if scale is not None and float(scale) != SCALE_MAX:
        return None
    score = float(value)
    if not SCALE_MIN <= score <= SCALE_MAX:
        return None
    return (score - SCALE_MIN) / (SCALE_MAX - SCALE_MIN)


def parse_judge_output(text: str | None, criteria: Sequence[Criterion] = RUBRIC) -> JudgeScores:
    """Read the judge's reply into per-criterion scores in ``[0, 1]`` (rules: module docstring)."""
    names = [c.name for c in criteria]
    lookup = _lookup(criteria)
    found: dict[str, float] = {}
    for piece in _SPLIT.split(text or ""):
        line = re.sub(r"[*`#>]", "", piece).replace("_", " ")
        match = _LINE.match(line)
        if match is None:
            continue
        name = lookup.get(_normalise(match["name"]))
        if name is None or name in found:
            continue
        score = _read_score(match["value"], match["scale"])
        if score is not None:
            found[name] = score
    missing = [n for n in names if n not in found]
    return JudgeScores({n: found.get(n, 0.0) for n in names}, parsed=not missing, missing=missing)


class Judge:
    """A text LM grading answers on :data:`RUBRIC`, loaded on first use, never trained.

    Args:
        model: local folder of an instruction-tuned causal LM (:class:`emorl.textlm.TextLM`).
        dtype: its weights' dtype.
        device: where it runs; ``None`` = wherever :meth:`to` puts it (GRPO: the policy's
            device), CPU until then.
        batch_size: answers per generation batch; max_new_tokens: reply length limit (four short
            lines need about 30 tokens).
        label_options: the emotion options shown in the prompt.

    Counters readable by callers: ``calls`` (answers graded), ``unparsable`` (answers whose reply
    missed at least one criterion), ``batches`` (``score`` calls).
    """

    def __init__(
        self,
        model: str,
        dtype: str = "bfloat16",
        device: str | torch.device | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 64,
        label_options: Sequence[str] | None = None,
        criteria: Sequence[Criterion] = RUBRIC,
    ) -> None:
        if batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"judge batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}")
        self.model_path = str(model)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.label_options = list(label_options) if label_options else None
        self.criteria = tuple(criteria)
        self.lm = None
        self.mesh = None
        self.calls = 0
        self.unparsable = 0
        self.batches = 0

    def to(self, device: str | torch.device) -> Judge:
        """Run on ``device`` from now on (moves a loaded model; a sharded judge stays where it is)."""
        if self.mesh is not None:
            return self
        self.device = torch.device(device)
        if self.lm is not None:
            self.lm.to(self.device)
        return self

    def shard_over(self, mesh) -> Judge:
        """Shard the judge with FSDP2 over ``mesh`` (GRPO under FSDP: the policy's data-parallel
        ranks): each rank holds 1/N of its weights, and every :meth:`score` call gathers them once
        (all ranks judge together) and reshards after. Loaded on the host first, then sharded."""
        self.mesh = mesh
        if self.lm is not None:
            self.lm.shard(mesh)
        return self

    def _load(self):
        if self.lm is None:
            from emorl.textlm import TextLM

            self.lm = TextLM(self.model_path, self.dtype, "cpu" if self.mesh is not None else self.device or "cpu")
            if self.mesh is not None:
                self.lm.shard(self.mesh)
        return self.lm

    def generate(self, conversations: Sequence[list[dict]]) -> list[str]:
        """The judge's raw replies (greedy)."""
        return self._load().generate(conversations, max_new_tokens=self.max_new_tokens,
                                     batch_size=self.batch_size, temperature=0.0)

    def score(self, answers: Sequence[str], rows: Sequence[Mapping | None]) -> list[JudgeScores]:
        """Grade every answer against its clip's row (greedy); updates the counters."""
        if len(answers) != len(rows):
            raise ValueError(f"{len(answers)} answers but {len(rows)} rows")
        if not answers:
            return []
        conversations = [judge_messages(a, r, self.label_options, self.criteria) for a, r in zip(answers, rows)]
        replies = self.generate(conversations)
        results = [parse_judge_output(reply, self.criteria) for reply in replies]
        self.batches += 1
        self.calls += len(results)
        self.unparsable += sum(not r.parsed for r in results)
        return results

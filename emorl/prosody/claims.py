"""What a free text claims about a voice's pitch, loudness and rate, and whether the bins agree.

A rationale (written by an LLM, by a template, or by the model under training) says things such
as *"her pitch is high and she speaks quickly, though not loudly"*. :func:`extract_claims` reads
those statements as :class:`ProsodyClaim` objects (dimension ``pitch`` / ``energy`` / ``rate``,
level ``low`` / ``normal`` / ``high``); :func:`faithfulness` compares them with a clip's measured
bins (``row["prosody"]["bins"]``, :mod:`emorl.prosody.bins`). Pure functions, regular
expressions and word lists only (no model), so a whole corpus is checked in seconds.

How a claim is read (``docs/cot.md`` lists the vocabulary):

- **bare words** name their dimension and level alone: *loud, quiet, soft, soft-spoken, shouting,
  whispering, energetic* (energy), *fast, slow, hurried, rushed, sluggish* (rate),
  *high-pitched, shrill* (pitch); the rate adverbs *quickly, rapidly, slowly* only next to a word
  of speaking (*speaks quickly*), so *she quickly realises* is no claim;
- **a level word next to a cue noun**: *high / low / raised / elevated / deep / normal / moderate
  / average / medium ...* before a cue (*high pitch*, *low energy*, *moderate speaking rate*,
  *low-volume*) or after it through a copula or a colon (*the pitch is quite high*,
  *rate: fast*, *the volume of her voice stays low*). Cues: *pitch, F0, fundamental frequency,
  tone, register* (pitch), *volume, loudness, intensity, energy, amplitude* (energy), *rate,
  tempo, pace, speed* (rate); *voice* takes *high / deep* (pitch) and *raised / intense* (energy:
  *a raised voice*); *speech / delivery* take *intense* (energy) and *quick / rapid / brisk*
  (rate). A level word with no cue (*a high chance*, *deep sadness*) is no claim;
- **negation**: a negator (*not, n't, never, no, neither, nor, hardly, barely, without*) in the
  three words before the level word turns ``low`` / ``high`` into ``normal`` (*not loud*: the
  speaker is at most moderately loud) and drops a negated ``normal`` (*not normal* says no
  direction); negation carries over *or* / *nor* (*not too fast or too slow*), and the two halves
  of *neither fast nor slow* make one ``normal`` claim. A contrast keeps only its positive half:
  *loud, not soft*, *not soft but loud*, *loud rather than soft* are one ``high`` claim;
- **one claim per dimension per mention**: *fast pace* is one claim, not two;
- **quoted speech is skipped**: text inside double quotes (straight or curly) or inside
  ``<transcript>...</transcript>`` is not read, so a transcript's *"slow down!"* claims nothing.
  An unquoted transcript still does (a known limit). So do coordinated cues only in part:
  *pitch and volume are high* is one energy claim (the cue nearest the level word).

Every caption :func:`emorl.prosody.caption.prosody_caption` writes reads back to its own pitch /
loudness / rate bins (``tests/test_prosody_claims.py`` checks every combination).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from emorl.answer_scan import find_tags

DIMENSIONS = ("pitch", "energy", "rate")
LEVELS = ("low", "normal", "high")


@dataclass(frozen=True)
class ProsodyClaim:
    """One statement of a text about the voice."""

    dimension: str  #: "pitch" | "energy" | "rate"
    level: str  #: "low" | "normal" | "high"
    text: str  #: the matched span of the original text


@dataclass
class Faithfulness:
    """How a text's prosody claims compare with a clip's measured bins."""

    claims: list[ProsodyClaim] = field(default_factory=list)
    agreeing: int = 0
    contradicting: int = 0
    unverifiable: int = 0  #: claims about a dimension whose bin is ``unknown`` or missing

    @property
    def score(self) -> float | None:
        """agreeing / (agreeing + contradicting); None when no claim could be checked."""
        checked = self.agreeing + self.contradicting
        return self.agreeing / checked if checked else None


# -- vocabulary ------------------------------------------------------------------------------------
_GENERIC = {
    **dict.fromkeys(("high", "higher", "elevated", "raised", "heightened", "increased"), "high"),
    **dict.fromkeys(("low", "lower", "lowered", "reduced", "decreased"), "low"),
    **dict.fromkeys(("normal", "moderate", "average", "medium", "mid", "mid-range", "midrange", "typical",
                     "regular", "ordinary"), "normal"),
}
_LOUDNESS = {"loud": "high", "louder": "high", "strong": "high", "intense": "high", "soft": "low",
             "softer": "low", "quiet": "low", "quieter": "low", "weak": "low"}
_TEMPO = {"fast": "high", "faster": "high", "quick": "high", "quicker": "high", "rapid": "high",
          "brisk": "high", "hurried": "high", "rushed": "high", "slow": "low", "slower": "low",
          "sluggish": "low", "leisurely": "low", "unhurried": "low"}

#: (dimension, cue nouns, the level words those cues take). The first compatible entry wins.
_CUED: tuple[tuple[str, frozenset[str], Mapping[str, str]], ...] = (
    ("pitch", frozenset({"pitch", "pitched", "f0", "tone", "register", "frequency"}),
     {**_GENERIC, "deep": "low", "deeper": "low"}),
    ("pitch", frozenset({"voice", "voiced"}), {"high": "high", "higher": "high", "deep": "low", "deeper": "low"}),
    ("energy", frozenset({"volume", "loudness", "intensity", "energy", "amplitude"}), {**_GENERIC, **_LOUDNESS}),
    ("energy", frozenset({"voice", "delivery", "speech", "tone"}),
     {"raised": "high", "intense": "high", "forceful": "high", "powerful": "high", "faint": "low"}),
    ("rate", frozenset({"rate", "tempo", "pace", "pacing", "paced", "speed"}), {**_GENERIC, **_TEMPO}),
    ("rate", frozenset({"speech", "delivery", "speaking", "talking", "talk", "words"}),
     {"quick": "high", "quicker": "high", "rapid": "high", "brisk": "high"}),
)
_CUES = frozenset().union(*(cues for _, cues, _ in _CUED))

#: Words that make a claim alone.
_BARE: Mapping[str, tuple[str, str]] = {
    **dict.fromkeys(("loud", "louder", "loudly", "shouting", "shouted", "shouts", "yelling", "yelled",
                     "screaming", "screamed", "energetic"), ("energy", "high")),
    **dict.fromkeys(("quiet", "quieter", "quietly", "soft", "softer", "softly", "soft-spoken", "hushed",
                     "whisper", "whispers", "whispered", "whispering"), ("energy", "low")),
    **dict.fromkeys(("fast", "faster", "fast-paced", "hurried", "hurriedly", "rushed", "hasty", "hastily",
                     "rapid-fire"), ("rate", "high")),
    **dict.fromkeys(("slow", "slower", "slow-paced", "sluggish", "drawn-out"), ("rate", "low")),
    **dict.fromkeys(("high-pitched", "shrill", "squeaky"), ("pitch", "high")),
    **dict.fromkeys(("low-pitched",), ("pitch", "low")),
}
#: Rate adverbs that are claims only near a word of speaking (*speaks quickly*, not *quickly realises*).
_ADVERBS = {"quickly": "high", "rapidly": "high", "slowly": "low"}
_SPEAKING = ("speak", "spoke", "talk", "say", "said", "utter", "deliver", "voice", "speech", "word", "ask",
             "answer", "repl", "respond", "read", "sentence", "phrase", "line", "tone", "pace")
_SPEAKING_WINDOW = 4

_LEVEL_WORDS = frozenset(_BARE) | frozenset(_ADVERBS) | frozenset().union(*(lv for _, _, lv in _CUED))
_NEGATORS = frozenset({"not", "never", "no", "neither", "nor", "hardly", "barely", "without"})
_NEGATION_WINDOW = 3
#: Between a cue and its level word (*the pitch of her voice is not very high*).
_LINK = frozenset(
    """is was are were be been being seems seemed sounds sounded remains remained stays stayed appears
    appeared feels felt becomes became gets got kept 's quite rather very fairly relatively somewhat extremely
    slightly notably particularly noticeably markedly pretty so too a bit little unusually consistently
    generally mostly overall mainly also still clearly distinctly not never hardly barely of the his her
    their its this voice speech speaker speaker's utterance""".split()
)
#: Words that may stand between a level word and its cue are any others but these (and 2 at most).
_NOT_FILLER = _LINK - {"quite", "rather", "very", "fairly", "relatively", "somewhat", "extremely", "slightly",
                       "overall", "unusually", "voice", "speech"} | {"than", "in", "with", "at", "for", "to",
                                                                     "from", "by", "on", "but", "or", "nor", "an"}
_MAX_FILLERS = 2
_LINK_PUNCT = frozenset(":=-–—")
_JOINERS = frozenset({"or", "nor", ",", "too", "overly", "very", "particularly", "excessively"})
_CONTRAST = frozenset({",", "not", "and", "but", "rather", "than", "instead", "of"})

#: Quoted speech, blanked before reading. Alone, this regex is quadratic: each opening ``“`` or
#: ``<transcript>`` with no closing mark after it is tried up to the end of the text
#: (:func:`_quoted_spans` removes those first).
_QUOTED = re.compile(r'"[^"]*"|“[^”]*”|<transcript>.*?</transcript>', re.IGNORECASE | re.DOTALL)
_DEAD = "\x00"  # stands in for an opening mark that cannot open a span (none of the marks, same length)
#: "higher than normal pitch": the comparison's reference is no level of its own.
_REFERENCE = re.compile(r"\bthan\s+(?:normal|usual|average|typical|expected|before)\b", re.IGNORECASE)
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)*(?:-[A-Za-z0-9]+)*|[^\sA-Za-z0-9]")


# -- reading ---------------------------------------------------------------------------------------
@dataclass
class _Token:
    word: str  # lower case, ASCII apostrophe
    start: int
    end: int

    @property
    def is_word(self) -> bool:
        return self.word[0].isalnum()


@dataclass
class _Candidate:
    dimension: str
    level: str
    first: int  # token indices, inclusive
    last: int
    level_at: int  # the level word's token
    negated: bool = False
    negator_at: int | None = None


def _quoted_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every span :data:`_QUOTED` finds, in time linear in the text's length.

    An opening ``“`` after the last ``”``, or ``<transcript>`` after the last ``</transcript>``,
    opens no span (nothing closes it), so it is replaced by a character of no meaning here before
    the regex runs: every other opening mark is followed by its closing one, where the regex stops,
    and the spans found are the same.
    """
    last_curly = text.rfind("”")
    tags = find_tags(text, ("transcript",))
    last_close = max((tag.start for tag in tags if tag.closing), default=-1)
    dead = [tag.start for tag in tags if not tag.closing and tag.start > last_close]
    text = text[: last_curly + 1] + text[last_curly + 1 :].replace("“", _DEAD)
    if dead:
        chars = list(text)
        for start in dead:
            chars[start] = _DEAD
        text = "".join(chars)
    return [m.span() for m in _QUOTED.finditer(text)]


def _masked(text: str) -> str:
    """The text with quoted speech and comparison references blanked (positions kept)."""
    pieces, position = [], 0
    for start, end in _quoted_spans(text):
        pieces += [text[position:start], " " * (end - start)]
        position = end
    pieces.append(text[position:])
    blank = lambda m: " " * len(m.group(0))  # noqa: E731
    return _REFERENCE.sub(blank, "".join(pieces))


def _tokens(text: str) -> list[_Token]:
    return [_Token(m.group(0).lower().replace("’", "'"), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def _level_word(word: str) -> str:
    """``higher-than-usual`` reads as ``higher``."""
    parts = word.split("-")
    return parts[0] if len(parts) > 2 and parts[1] == "than" else word


def _is_cue(tokens: list[_Token], j: int) -> bool:
    """Whether token j is a cue noun (*frequency* only as *fundamental frequency*)."""
    word = tokens[j].word
    if word == "frequency":
        return j > 0 and tokens[j - 1].word == "fundamental"
    return word in _CUES


def _compatible(level_word: str, cue: str) -> tuple[str, str] | None:
    for dimension, cues, levels in _CUED:
        if cue in cues and level_word in levels:
            return dimension, levels[level_word]
    return None


def _cue_after(tokens: list[_Token], i: int, word: str) -> tuple[_Candidate | None, bool]:
    """*high pitch*, *a high, rising pitch*: the claim, and whether a comma was crossed."""
    fillers, comma = 0, False
    for j in range(i + 1, len(tokens)):
        tok = tokens[j]
        if tok.word == ",":
            comma = True
            continue
        if _is_cue(tokens, j) and (found := _compatible(word, tok.word)):
            return _Candidate(*found, i, j, i), comma
        if not tok.is_word or tok.word in _LEVEL_WORDS or tok.word in _NOT_FILLER or tok.word in _NEGATORS:
            break
        fillers += 1
        if fillers > _MAX_FILLERS:
            break
    return None, comma


def _cue_before(tokens: list[_Token], i: int, word: str) -> _Candidate | None:
    """*pitch: high*, *the volume of her voice is not very low* (the volume's, not the voice's)."""
    nearest = None
    for k in range(i - 1, max(i - 8, -1), -1):
        tok = tokens[k]
        if _is_cue(tokens, k) and (found := _compatible(word, tok.word)):
            claim = _Candidate(*found, k - 1 if tok.word == "frequency" else k, i, i)
            if nearest is None and tok.word in _LINK:  # "voice": an "X of her voice" may come before
                nearest = claim
                continue
            if nearest is None or "of" in {t.word for t in tokens[k + 1: nearest.first]}:
                return claim
            return nearest
        if tok.word in _LINK or tok.word in _LINK_PUNCT or tok.word.endswith("n't"):
            continue
        break
    return nearest


def _cued(tokens: list[_Token], i: int, word: str) -> _Candidate | None:
    """A level word with its cue; a cue right after it (no comma between) beats one before it."""
    after, comma = _cue_after(tokens, i, word)
    if after is not None and not comma:
        return after
    return _cue_before(tokens, i, word) or after


def _near_speaking(tokens: list[_Token], i: int) -> bool:
    window = tokens[max(0, i - _SPEAKING_WINDOW): i + _SPEAKING_WINDOW + 1]
    return any(t.word.startswith(_SPEAKING) for t in window if t is not tokens[i])


def _candidate(tokens: list[_Token], i: int) -> _Candidate | None:
    """The claim whose level word is token i, if any."""
    word = tokens[i].word
    level_word = _level_word(word)
    if word in _BARE or word in _ADVERBS or level_word in _LEVEL_WORDS:
        cued = _cued(tokens, i, level_word)
        bare = _BARE.get(word)
        if cued is not None and (bare is None or cued.dimension == bare[0]):
            return cued
        if bare is not None:
            return _Candidate(*bare, i, i, i)
        if word in _ADVERBS and _near_speaking(tokens, i):
            return _Candidate("rate", _ADVERBS[word], i, i, i)
        return None
    parts = word.split("-")  # high-energy, low-volume, deep-voiced, medium-paced
    if len(parts) == 2 and parts[1] in _CUES:
        found = _compatible(parts[0], parts[1])
        if found:
            return _Candidate(*found, i, i, i)
    return None


def _negator(tokens: list[_Token], i: int) -> int | None:
    """Index of a negator among the few words before token i (same clause), else None."""
    for k in range(i - 1, max(i - 1 - _NEGATION_WINDOW, -1), -1):
        word = tokens[k].word
        if not tokens[k].is_word or word == "but":
            return None
        if word in _NEGATORS or word.endswith("n't"):
            after = tokens[k + 1].word if k + 1 < len(tokens) else ""
            return None if word == "not" and after in ("only", "just") else k
    return None


def _gap(tokens: list[_Token], a: _Candidate, b: _Candidate) -> set[str]:
    return {t.word for t in tokens[a.last + 1: b.first]}


def _resolve(tokens: list[_Token], found: list[_Candidate]) -> list[_Candidate]:
    """Negation, its carry over *or* / *nor*, contrasts and *neither X nor Y* merging."""
    for c in found:
        c.negator_at = _negator(tokens, c.level_at)
        c.negated = c.negator_at is not None
        before = [t.word for t in tokens[max(0, c.first - 2): c.first]]
        if before[-1:] == ["than"] or before == ["instead", "of"]:
            c.level = ""  # "loud rather than soft": the reference of a comparison
    for a, b in zip(found, found[1:]):
        if a.negated and not b.negated and _gap(tokens, a, b) <= _JOINERS and _gap(tokens, a, b) & {"or", "nor"}:
            b.negated, b.negator_at = True, a.negator_at
    for a, b in zip(found, found[1:]):
        if a.dimension != b.dimension or a.negated == b.negated:
            continue
        gap = _gap(tokens, a, b)
        if b.negated and gap <= _CONTRAST and "not" in gap:  # "loud, not soft"
            b.level = ""
        elif a.negated and gap <= {",", "but", "rather"} and "but" in gap:  # "not soft but loud"
            a.level = ""
    kept: list[_Candidate] = []
    for c in found:
        if not c.level:
            continue
        if c.negated:
            if c.level == "normal":
                continue
            c.level, c.first = "normal", min(c.first, c.negator_at)
        previous = kept[-1] if kept else None
        if (previous is not None and c.negated and previous.negated and previous.dimension == c.dimension
                and _gap(tokens, previous, c) <= _JOINERS):  # "neither fast nor slow": one mention
            previous.last = c.last
            continue
        kept.append(c)
    return kept


def extract_claims(text: str | None) -> list[ProsodyClaim]:
    """Every claim of ``text`` about pitch, energy (loudness) or rate, in text order."""
    if not text:
        return []
    tokens = _tokens(_masked(text))
    found = [c for i in range(len(tokens)) if (c := _candidate(tokens, i)) is not None]
    return [ProsodyClaim(c.dimension, c.level, text[tokens[c.first].start: tokens[c.last].end])
            for c in _resolve(tokens, found)]


# -- comparing -------------------------------------------------------------------------------------
def faithfulness(text: str | None, bins: Mapping[str, str] | None) -> Faithfulness:
    """Compare the claims of ``text`` with measured ``bins`` (``{"pitch": "high", ...}``).

    A claim agrees when its level equals its dimension's bin and contradicts when it differs; a
    bin that is ``unknown``, missing or not a level (or no bins at all) makes it unverifiable.
    """
    claims = extract_claims(text)
    result = Faithfulness(claims=claims)
    for claim in claims:
        measured = (bins or {}).get(claim.dimension)
        if measured not in LEVELS:
            result.unverifiable += 1
        elif measured == claim.level:
            result.agreeing += 1
        else:
            result.contradicting += 1
    return result


def contradicts(text: str | None, bins: Mapping[str, str] | None) -> bool:
    """Whether any claim of ``text`` contradicts the measured ``bins``."""
    return faithfulness(text, bins).contradicting > 0

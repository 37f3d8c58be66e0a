"""Linear-time reading of answer tags: format checks and ``<answer>`` blocks without backtracking.

A model's answer is read in two passes, each linear in its length:

1. :func:`find_tags` lists every tag ``<name>`` / ``</name>`` of the given names (case-insensitive,
   with exactly the case folding of Python's ``re.IGNORECASE``: the search is one regex of
   bounded length per position, so no backtracking can pile up). Two such tags never overlap
   (a tag holds ``<`` only as its first character), so the list is every occurrence;
2. a small hand-written walk over that list and the text between the tags:
   :func:`fits` checks a whole answer against a :class:`Shape` (the answer formats of
   :mod:`emorl.prompts`), :func:`answer_blocks` finds the spans that
   ``re.findall(r"<answer>(.*?)</answer>", text, re.I | re.S)`` finds.

The regexes these replace (nested lazy groups with a look-ahead at every character) took
minutes on answers of a few hundred characters cut inside a block; ``tests/test_answer_scan.py``
compares the two on fuzzed answers and bounds the time on answers of 20,000 characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

#: Gap kinds of a :class:`Shape`: only whitespace (possibly none); text with a non-space
#: character and no tag at all; text with a non-space character whose only tags are nested ones.
WS, TEXT, FREE = "ws", "text", "free"

_SPACE_ONLY = re.compile(r"\s*")
_NON_SPACE = re.compile(r"\S")


class Tag(NamedTuple):
    """One tag in a text: ``text[start:end]`` is ``<name>`` (or ``</name>`` when ``closing``)."""

    start: int
    end: int
    name: str
    closing: bool


@lru_cache(maxsize=16)
def _tag_regex(names: tuple[str, ...]) -> re.Pattern[str]:
    """``<`` ``/``? then one of ``names`` (group 2 + its index) then ``>``, ignoring case."""
    return re.compile(rf"<(/?)(?:{'|'.join(f'({re.escape(name)})' for name in names)})>", re.IGNORECASE)


def find_tags(text: str, names: Sequence[str]) -> list[Tag]:
    """Every ``<name>`` / ``</name>`` of ``names`` in ``text``, in order (case-insensitive)."""
    if "<" not in text:
        return []
    names = tuple(names)
    return [Tag(m.start(), m.end(), names[m.lastindex - 2], m.group(1) == "/")  # type: ignore[operator]
            for m in _tag_regex(names).finditer(text)]


def _gap_ok(segment: str, kind: str) -> bool:
    """Whether the text between two tags is what a gap of ``kind`` allows (tags already checked)."""
    if kind == WS:
        return _SPACE_ONLY.fullmatch(segment) is not None
    return _NON_SPACE.search(segment) is not None


@dataclass(frozen=True)
class Shape:
    """A whole-answer format: ``gaps[0] tags[0] gaps[1] ... tags[-1] gaps[-1]``.

    Attributes:
        tags: the tags in order, as ``(name, closing)``.
        gaps: one kind per gap (``len(tags) + 1``): :data:`WS`, :data:`TEXT` or :data:`FREE`.
        names: every tag name the text is scanned for; any of them outside the expected
            sequence fails the check, except ``nested`` names inside a :data:`FREE` gap.
        nested: tag names a :data:`FREE` gap may hold (EUR's think block may hold ESR's tags).
        answer_gap: index of the gap that is the answer (for :meth:`answer`), or ``None``.
    """

    tags: tuple[tuple[str, bool], ...]
    gaps: tuple[str, ...]
    names: tuple[str, ...]
    nested: frozenset[str] = frozenset()
    answer_gap: int | None = None

    def __post_init__(self) -> None:
        if len(self.gaps) != len(self.tags) + 1:
            raise ValueError(f"a shape of {len(self.tags)} tags needs {len(self.tags) + 1} gaps")


def fits(text: str, shape: Shape) -> tuple[bool, str | None]:
    """``(whether the whole text has the shape, the answer gap's text stripped or None)``."""
    found = find_tags(text, shape.names)
    k, position, answer = 0, 0, None
    for index, kind in enumerate(shape.gaps):
        if kind == FREE:
            while k < len(found) and found[k].name in shape.nested:
                k += 1
        if index == len(shape.tags):  # the last gap runs to the end: no tag may be left
            if k != len(found):
                return False, None
            end, following = len(text), None
        else:
            if k == len(found) or (found[k].name, found[k].closing) != shape.tags[index]:
                return False, None
            end, following = found[k].start, found[k]
        segment = text[position:end]
        if not _gap_ok(segment, kind):
            return False, None
        if index == shape.answer_gap:
            answer = segment.strip()
        if following is not None:
            position, k = following.end, k + 1
    return True, answer


def answer_blocks(text: str, name: str = "answer") -> list[tuple[int, int, int, int]]:
    """``(start, inner start, inner end, end)`` of every ``<name>...</name>`` block, as
    ``re.finditer`` of ``<name>(.*?)</name>`` (case-insensitive, across lines) finds them: from an
    opening tag to the first closing tag after it, then on after that closing tag; an opening tag
    that no closing tag follows starts no block."""
    blocks, opened = [], None
    for tag in find_tags(text, (name,)):
        if opened is None and not tag.closing:
            opened = tag
        elif opened is not None and tag.closing:
            blocks.append((opened.start, opened.end, tag.start, tag.end))
            opened = None
    return blocks


def block_contents(text: str, name: str = "answer") -> list[str]:
    """The text inside every ``<name>`` block (as ``re.findall`` of ``<name>(.*?)</name>``)."""
    return [text[inner_start:inner_end] for _, inner_start, inner_end, _ in answer_blocks(text, name)]


def replace_blocks(text: str, replace: Callable[[str], str], name: str = "answer") -> str:
    """``text`` with every ``<name>`` block replaced by ``replace(its inner text)`` (as ``re.sub``)."""
    pieces, position = [], 0
    for start, inner_start, inner_end, end in answer_blocks(text, name):
        pieces += [text[position:start], replace(text[inner_start:inner_end])]
        position = end
    pieces.append(text[position:])
    return "".join(pieces)

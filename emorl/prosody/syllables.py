"""English syllable counting by rule (no dictionary): the speaking rate of a clip with a transcript."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*|\d+")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")


def word_syllables(word: str) -> int:
    """Syllables of one English word by rule (no dictionary; about right for common words).

    Vowel groups (``a e i o u``, and ``y`` after the first letter) count one each; a final
    silent ``e`` (not ``-le`` after a consonant, e.g. *table*), a final ``-ed`` not after
    ``t``/``d`` (*talked*, not *wanted*) and a final ``-es`` not after ``s x z ch sh ce ge``
    (*makes*, not *boxes*) take one away; ``-ing`` after a vowel adds one (*doing*); every word
    has at least one. A digit string counts one syllable per digit. Apostrophes are dropped
    (*don't* = 1).
    """
    word = word.lower().replace("'", "")
    if not word:
        return 0
    if word.isdigit():
        return len(word)
    core = word[0].replace("y", "") + word[1:]
    count = len(_VOWEL_GROUP.findall(core))
    if word.endswith("ing") and len(word) > 4 and word[-4] in "aeiouy":
        count += 1  # doing, being, saying: the vowel group hides a syllable break
    if count > 1 and _silent_ending(word):
        count -= 1
    return max(count, 1)


_SIBILANT_ES = ("ses", "xes", "zes", "ches", "shes", "ces", "ges")


def _silent_ending(word: str) -> bool:
    """A final silent ``e`` (*home*, not *table*, *agree*), ``-ed`` (*talked*), ``-es`` (*makes*)."""
    before = word[-3] if len(word) > 2 else ""
    if word.endswith("e"):
        return not word.endswith(("ee", "ye", "ie")) and not (word.endswith("le") and before not in "aeiouy")
    if word.endswith("ed"):
        return before not in "tdaeiouy"
    if word.endswith("es"):
        return not word.endswith(_SIBILANT_ES) and before not in "aeiouy"
    return False


def count_syllables(text: str | None) -> int:
    """Syllables of an English transcript: :func:`word_syllables` summed over its words."""
    return sum(word_syllables(w) for w in _WORD.findall((text or "").lower()))

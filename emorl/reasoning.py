"""Template reasoning: ESR blocks and EUR rationales built from what a clip's manifest row knows.

SFT on the ``eur`` / ``esr`` formats needs a target answer that reasons before it answers. When the
manifest carries no written reasoning (``rationale`` / ``reasoning``), these templates make one
from the row: its transcript, the transcript's emotion-bearing key words, and its prosody caption
when the corpus was measured (``emorl data prosody``), ending in the gold label. They teach the
*format* and ground it in the row's facts; they are not a substitute for real rationales.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Words that carry emotion on their own (lower case), looked for first among the key words.
EMOTION_WORDS: frozenset[str] = frozenset(
    """
    happy glad great wonderful lovely love best won amazing joy excited delighted fantastic
    sad miss gone alone failed never lost cry sorry lonely hurt
    angry outrageous dare sick enough stop lie excuses hate furious annoyed
    scared terrified afraid help noise followed fear worried nervous
    ugh revolting rotten disgusting gross yuck sick
    wow what really expect already surprise unbelievable
    relax calm peaceful fine slowly quiet rest hurry
    """.split()
)
_STOP_WORDS = frozenset(
    "a an the and or but so to of in on at by for from with is are am was were be been it this that "
    "i you he she we they me my your his her our their not do did does have has had will would can "
    "just there here all some no yes".split()
)
_WORD = re.compile(r"[a-z']+")


def key_words(transcript: str | None, limit: int = 3) -> list[str]:
    """Up to ``limit`` words of the transcript: emotion words first, then the longest content words.

    Order follows the transcript; repeated words count once.
    """
    words = list(dict.fromkeys(_WORD.findall((transcript or "").lower())))
    emotional = [w for w in words if w in EMOTION_WORDS]
    content = sorted((w for w in words if w not in _STOP_WORDS and w not in emotional), key=len, reverse=True)
    chosen = set(emotional[:limit] + content[: max(limit - len(emotional), 0)])
    return [w for w in words if w in chosen]


def prosody_text(row: Mapping | None) -> str | None:
    """The row's prosody caption, when its corpus was measured (``emorl data prosody``)."""
    row = row or {}
    prosody = row.get("prosody")
    caption = prosody.get("caption") if isinstance(prosody, Mapping) else row.get("prosody_caption")
    return str(caption).strip() or None if caption else None


def esr_blocks(row: Mapping | None, label: str) -> dict[str, str]:
    """The four ESR blocks (:data:`emorl.prompts.ESR_TAGS`) for the clip of manifest ``row``, labelled ``label``."""
    row = row or {}
    transcript = str(row.get("transcript") or "").strip()
    words = key_words(transcript)
    return {
        "transcript": transcript or "unclear",
        "keywords": ", ".join(words) if words else "none",
        "prosody": prosody_text(row) or "not measured",
        "synthesis": f"the words and the voice point to {label}",
    }


def eur_rationale(row: Mapping | None, label: str) -> str:
    """A one-paragraph EUR rationale for the clip of manifest ``row``, labelled ``label`` (SFT targets;
    EmotionCoT's longer rationales are :func:`emorl.data.cot.template_rationale`)."""
    blocks = esr_blocks(row, label)
    said = f'The speaker says "{blocks["transcript"]}"' if blocks["transcript"] != "unclear" else "The words are unclear"
    cues = f", with the key words {blocks['keywords']}" if blocks["keywords"] != "none" else ""
    voice = f"; the voice: {blocks['prosody']}" if blocks["prosody"] != "not measured" else ""
    return f"{said}{cues}{voice}. Together they point to {label}."

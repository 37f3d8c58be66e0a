"""Corpus preparers: a corpus's native layout (or an EmoBox manifest) -> a prepared corpus folder.

Every preparer is ``prepare_<corpus>(root, out, **options) -> PreparedCorpus`` and writes the
format of :mod:`emorl.data.manifest` with EmoBox's keys and folds; the summary of what was
prepared and skipped is in ``prepared.extra["summary"]`` (print it with :func:`format_summary`).
See ``docs/data.md`` for where to get each corpus and its layout.
"""

from __future__ import annotations

from emorl.data.corpora.common import format_summary
from emorl.data.corpora.emobox import import_emobox, make_track2
from emorl.data.corpora.iemocap import prepare_iemocap
from emorl.data.corpora.meld import prepare_meld
from emorl.data.corpora.ravdess import prepare_ravdess
from emorl.data.corpora.savee import prepare_savee

PREPARERS = {
    "meld": prepare_meld,
    "iemocap": prepare_iemocap,
    "ravdess": prepare_ravdess,
    "savee": prepare_savee,
}

__all__ = [
    "PREPARERS",
    "format_summary",
    "import_emobox",
    "make_track2",
    "prepare_iemocap",
    "prepare_meld",
    "prepare_ravdess",
    "prepare_savee",
]

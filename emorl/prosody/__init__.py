"""Prosody for EmotionThinker: what a clip's voice does, in numbers, bins and words.

The pipeline (``docs/prosody.md``) in three pure steps, one module each:

1. :mod:`emorl.prosody.measures` — :func:`measure_prosody`: one waveform (+ its transcript) ->
   :class:`ProsodyMeasures`, numbers only: pitch by pYIN, energy, speaking rate (syllables by
   :mod:`emorl.prosody.syllables` when there is a transcript), pauses, and Praat's jitter /
   shimmer / HNR;
2. :mod:`emorl.prosody.bins` — :func:`fit_thresholds`: a corpus's measures ->
   :class:`ProsodyThresholds`, the tertile cut points of every binned quantity (pitch per
   speaker gender where known); its :meth:`~ProsodyThresholds.bin` puts any clip into ``low`` /
   ``normal`` / ``high`` (``unknown`` where the measure is missing);
3. :mod:`emorl.prosody.caption` — :func:`prosody_caption`: measures + bins -> one deterministic
   line such as ``pitch: high and rising, wide range; loudness: normal, steady; rate: fast``;
   :func:`annotate` does 2-3 for one clip and returns what a manifest row stores under
   ``"prosody"``.

:mod:`emorl.prosody.corpus` runs them over a prepared corpus (``emorl data prosody``); it is
not imported here, so that ``import emorl.prosody`` stays light (numpy only; librosa and Praat
load when a clip is measured). :mod:`emorl.prosody.task` is EmotionThinker-Base's
prosody-description task (the target wording from a clip's bins, its reader, the SFT task mix);
:mod:`emorl.prosody.task_metrics` its accuracy (torchmetrics: not imported here).
:mod:`emorl.prosody.claims` reads what a free text claims about the voice.
"""

from emorl.prosody.bins import (
    ALL,
    BINNED,
    BINS,
    MIN_GROUP,
    UNKNOWN,
    ZERO_IS_LOW,
    ProsodyThresholds,
    fit_thresholds,
)
from emorl.prosody.caption import annotate, prosody_caption
from emorl.prosody.measures import (
    ACTIVE_BELOW_PEAK_DB,
    ACTIVE_FLOOR_DB,
    FALLBACKS,
    FMAX,
    FMIN,
    HOP,
    MIN_PAUSE_S,
    MIN_VOICED_FRAMES,
    PRAAT_CEILING,
    PRAAT_FLOOR,
    PROSODY_VERSION,
    SAMPLE_RATE,
    ProsodyMeasures,
    measure_prosody,
    semitones_re,
    speaker_medians,
    voice_quality,
)
from emorl.prosody.syllables import count_syllables, word_syllables
from emorl.prosody.task import TaskMix, describe_prosody, read_description, score_description

__all__ = [
    "ACTIVE_BELOW_PEAK_DB", "ACTIVE_FLOOR_DB", "ALL", "BINNED", "BINS", "FALLBACKS", "FMAX", "FMIN", "HOP",
    "MIN_GROUP", "MIN_PAUSE_S", "MIN_VOICED_FRAMES", "PRAAT_CEILING", "PRAAT_FLOOR", "PROSODY_VERSION",
    "SAMPLE_RATE", "UNKNOWN", "ZERO_IS_LOW", "ProsodyMeasures", "ProsodyThresholds", "annotate",
    "count_syllables", "fit_thresholds", "measure_prosody", "prosody_caption", "semitones_re",
    "speaker_medians", "voice_quality", "word_syllables",
    "TaskMix", "describe_prosody", "read_description", "score_description",
]

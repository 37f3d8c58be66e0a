"""Real recorded speech from two Debian packages, for the tests marked ``real_speech``.

``make system-deps`` installs them (``apt-get install pocketsphinx-testdata codec2-examples``):

- ``pocketsphinx-testdata``: LibriVox read speech (Jane Austen, *Sense and Sensibility*, a male
  reader), 16 kHz 16-bit wav, in ``/usr/share/pocketsphinx/test/data/librivox/``;
- ``codec2-examples``: codec2's reference speech, a female and a male talker at 8 kHz (wav, and
  the same samples as headerless 16-bit little-endian ``.raw``) and a female talker at 16 kHz,
  in ``/usr/share/codec2/{wav,raw}/``.

Genders are the speakers' as heard (codec2's ``forig``/``morig`` are named female / male
original). codec2's ``hts1a`` (male) is left out on purpose: it is band-limited telephone speech
whose fundamental is missing, and pYIN tracks it at the wrong octave (see docs/reliability.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CODEC2 = Path("/usr/share/codec2")
PACKAGES = "pocketsphinx-testdata and codec2-examples"


@dataclass(frozen=True)
class RealClip:
    name: str
    path: Path
    gender: str  #: "F" or "M"
    sample_rate: int


CLIPS = (
    RealClip("librivox_0870", LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav", "M", 16000),
    RealClip("librivox_0880", LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav", "M", 16000),
    RealClip("librivox_0890", LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0890.wav", "M", 16000),
    RealClip("librivox_0920", LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0920.wav", "M", 16000),
    RealClip("librivox_0930", LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0930.wav", "M", 16000),
    RealClip("codec2_forig", CODEC2 / "wav" / "forig.wav", "F", 8000),
    RealClip("codec2_hts2a", CODEC2 / "wav" / "hts2a.wav", "F", 8000),
    RealClip("codec2_morig", CODEC2 / "wav" / "morig.wav", "M", 8000),
    RealClip("codec2_speech_orig_16k", CODEC2 / "raw" / "speech_orig_16k.wav", "F", 16000),
)
#: Clips whose mean F0 is compared with Praat's. LibriVox 0880 and 0920 are left out: the reader's
#: creaky low phrase ends make Praat jump an octave up on some frames, which lifts Praat's *mean*
#: (0880: pYIN 84.1 Hz, Praat mean 96.6 Hz but median 82.1 Hz; 0920: 104.6 vs 114.3, median 105.5).
PRAAT_COMPARED = ("librivox_0870", "librivox_0890", "librivox_0930", "codec2_forig", "codec2_hts2a",
                  "codec2_morig", "codec2_speech_orig_16k")
#: codec2's headerless 8 kHz 16-bit little-endian copies of three of the clips above.
RAW = {"codec2_forig": CODEC2 / "raw" / "forig.raw", "codec2_hts2a": CODEC2 / "raw" / "hts2a.raw",
       "codec2_morig": CODEC2 / "raw" / "morig.raw"}
RAW_SAMPLE_RATE = 8000


def missing_files() -> list[Path]:
    """The files the real-speech tests read that are not on this machine."""
    return [p for p in [c.path for c in CLIPS] + list(RAW.values()) if not p.is_file()]


def wrap_raw(raw: Path, out: Path, sample_rate: int = RAW_SAMPLE_RATE) -> Path:
    """Write headerless 16-bit little-endian mono samples as a wav file (what codec2's .raw are)."""
    samples = np.fromfile(raw, dtype="<i2")
    sf.write(out, samples, sample_rate, subtype="PCM_16")
    return out

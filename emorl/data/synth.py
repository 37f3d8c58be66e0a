"""The embedded demo corpus: emotional speech rendered with espeak-ng, in RAVDESS's native layout.

``synthesize(out)`` writes ``out/Actor_XX/03-01-EE-II-SS-RR-XX.wav`` — modality 03 (audio only),
vocal channel 01 (speech), emotion EE as RAVDESS numbers them (01 neutral, 02 calm, 03 happy,
04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), intensity II (01 normal, 02 strong;
neutral has no strong clips, as in RAVDESS), statement SS, repetition RR (always 01), actor XX
(odd male, even female) — and ``out/transcripts.tsv`` (a ``statement<TAB>text`` header, then one
line per statement used), which ``prepare_ravdess`` reads to fill the transcripts.

Files are 16-bit mono wav at espeak-ng's native 22 050 Hz; the loader resamples (RAVDESS itself
is 48 kHz, which would only make the files twice as big).

**Statements.** SS 01 and 02 are RAVDESS's own two sentences ("Kids are talking by the door",
"Dogs are sitting by the door"), neutral in content and spoken in every emotion, so only prosody
tells those clips apart. SS 03-34 extend RAVDESS: emotion-typical sentences, four per emotion,
``SS = 3 + 4 * (EE - 1) + k`` for the emotion's k-th sentence (k = 0..3). A statement number
always means the same text, whatever ``sentences_per_emotion`` is; each clip of an emotion
uses either one of its first ``sentences_per_emotion`` typical sentences or a shared one.

**Prosody.** Each emotion (:data:`STYLES`) shifts the actor's own neutral voice: pitch level
(``-p``, espeak's 0-99 scale), speaking rate (``-s``, words per minute), loudness (``-a``,
100 = espeak's default) and pitch range (SSML ``<prosody range="N%">`` with ``-m``; espeak-ng
1.51 caps the range at 200 %). Strong intensity shifts :data:`STRONG` (1.6) times as far.
A small seeded jitter (``numpy.random.default_rng(seed)``) varies every clip a little.

**Actors.** :data:`ACTORS` gives each of the eight default actors its own espeak-ng voice
variant, base pitch and base rate, so speaker and emotion are not confounded. The actor numbers
are real RAVDESS actor numbers, chosen against EmoBox's RAVDESS folds (``ACTOR_FOLD`` in
:mod:`emorl.data.corpora.ravdess`): actors 1 (male) and 20 (female) are two of fold 1's four
test actors (1, 11, 20, 21), and actors 2-7 (three male, three female) are in no fold-1 test
set. So ``prepare_ravdess`` + fold 1 trains on six voices and tests on two unseen ones, one of
each gender. Asking for fewer actors takes them in :data:`DEFAULT_ACTORS` order (the two
held-out ones first).

**Determinism.** espeak-ng is deterministic and the jitter is seeded, so the same arguments (and
the same espeak-ng version) give byte-identical files.

Rendering runs ``workers`` espeak-ng processes at a time (2 by default); the default corpus
(8 actors, 4 sentences per emotion: 720 clips, about half an hour of speech) takes a few seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np


@dataclass(frozen=True)
class EmotionStyle:
    """How one emotion shifts an actor's neutral voice (strong intensity: :data:`STRONG` times)."""

    code: str  #: RAVDESS emotion number EE
    name: str  #: RAVDESS emotion name
    pitch: int  #: shift of espeak-ng ``-p`` (pitch level, 0-99 scale)
    rate: int  #: shift of ``-s`` (words per minute)
    amplitude: int  #: shift of ``-a`` (loudness; 100 is espeak's default)
    range: int  #: shift of the SSML pitch range, in percent points from 100 %


#: The emotions, in RAVDESS order. Designed after the usual acoustic profiles: high-arousal
#: emotions (happy, angry, fearful, surprised) raise pitch, loudness and range; sad and calm lower
#: them and slow down; fear is fast, sad the slowest; disgust is low, slow and fairly loud.
STYLES: tuple[EmotionStyle, ...] = (
    EmotionStyle("01", "neutral", 0, 0, 0, 0),
    EmotionStyle("02", "calm", -8, -25, -25, -30),
    EmotionStyle("03", "happy", 18, 20, 30, 50),
    EmotionStyle("04", "sad", -18, -45, -35, -50),
    EmotionStyle("05", "angry", 10, 30, 70, 30),
    EmotionStyle("06", "fearful", 25, 45, 5, 35),
    EmotionStyle("07", "disgust", -12, -30, 20, -20),
    EmotionStyle("08", "surprised", 30, 5, 40, 70),
)
EMOTIONS: dict[str, str] = {style.code: style.name for style in STYLES}
#: How much further strong intensity (II = 02) shifts the prosody than normal intensity.
STRONG = 1.6

#: RAVDESS's own statements (SS 01, 02): neutral content, spoken in every emotion.
SHARED_SENTENCES: tuple[str, ...] = ("Kids are talking by the door.", "Dogs are sitting by the door.")
#: Emotion-typical sentences, four per emotion (SS 03-34).
SENTENCES: dict[str, tuple[str, ...]] = {
    "neutral": ("The meeting is scheduled for three o'clock.", "Please put the files on the desk.",
                "The train leaves from platform two.", "I bought some bread on the way home."),
    "calm": ("Take your time, everything is fine.", "Let us just relax and breathe slowly.",
             "It is peaceful here by the quiet lake.", "There is no hurry at all, rest now."),
    "happy": ("This is wonderful, I am so happy for you!", "We won, I cannot believe how great this is!",
              "What a lovely surprise party, I love it!", "I got the job, this is the best day ever!"),
    "sad": ("I miss her so much, nothing feels right anymore.", "He is gone and I will never see him again.",
            "I tried so hard and still I failed.", "Everyone left and I am all alone now."),
    "angry": ("I told you to stop doing that right now!", "How dare you lie to me again!",
              "This is outrageous, get out of my office!", "I am sick of your excuses, enough!"),
    "fearful": ("Someone is in the house, I am so scared.", "Please do not hurt me, please.",
                "What was that noise, I am terrified.", "I think we are being followed, help."),
    "disgust": ("Ugh, that smell is revolting.", "This food is rotten and disgusting.",
                "That is gross, I feel sick looking at it.", "Yuck, there is hair in my soup."),
    "surprised": ("Wow, I did not expect to see you here!", "What, you are getting married?",
                  "No way, is that really true?", "Oh, you finished it already?"),
}  # fmt: skip
MAX_SENTENCES = 4


@dataclass(frozen=True)
class Actor:
    """One demo actor: an espeak-ng voice (language + variant) and its neutral pitch and rate."""

    voice: str
    pitch: int  #: base ``-p``
    rate: int  #: base ``-s``


#: RAVDESS actor number -> voice; odd numbers get male variants, even numbers female ones.
ACTORS: dict[int, Actor] = {
    1: Actor("en-us+m3", 40, 165),
    20: Actor("en-us+f3", 60, 170),
    2: Actor("en+f2", 62, 160),
    3: Actor("en-gb-scotland+m1", 38, 155),
    4: Actor("en-gb-x-rp+f4", 58, 175),
    5: Actor("en-029+m2", 45, 170),
    6: Actor("en-us+f1", 66, 150),
    7: Actor("en-gb+m4", 35, 180),
}
#: Default actors: 1 and 20 are in EmoBox RAVDESS fold 1's test set (with 11 and 21); 2-7 are not.
DEFAULT_ACTORS: tuple[int, ...] = (1, 20, 2, 3, 4, 5, 6, 7)
INSTALL_HINT = "install it (Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng)"
_CLIP_NAME = re.compile(r"^03-01-\d\d-\d\d-\d\d-\d\d-\d\d\.wav$")


class SynthError(RuntimeError):
    """espeak-ng is missing, a rendering failed, or the output folder holds other clips."""


@dataclass
class SynthSummary:
    """What :func:`synthesize` wrote."""

    out: Path
    clips: int
    actors: list[int]
    seconds: float

    def __str__(self) -> str:
        return (
            f"demo corpus: {self.clips} clips, {len(self.actors)} actors {self.actors}, "
            f"{self.seconds / 60:.1f} min of speech -> {self.out}"
        )


def statement_texts() -> dict[str, str]:
    """Every statement number SS -> its sentence (01-02 shared, 03-34 emotion-typical)."""
    table = {f"{k + 1:02d}": text for k, text in enumerate(SHARED_SENTENCES)}
    for style in STYLES:
        for k, text in enumerate(SENTENCES[style.name]):
            table[_typical_statement(style.code, k)] = text
    return table


def _typical_statement(code: str, k: int) -> str:
    return f"{len(SHARED_SENTENCES) + MAX_SENTENCES * (int(code) - 1) + k + 1:02d}"


@dataclass(frozen=True)
class _Job:
    path: Path
    command: list[str]


def _plan(exe: str, out: Path, actors: list[int], sentences_per_emotion: int, seed: int) -> list[_Job]:
    """Every clip's path and espeak-ng command line, in a fixed order (the jitter follows it)."""
    rng = np.random.default_rng(seed)
    texts = statement_texts()
    shared = [f"{k + 1:02d}" for k in range(len(SHARED_SENTENCES))]
    jobs = []
    for actor_id in actors:
        actor = ACTORS[actor_id]
        for style in STYLES:
            statements = [_typical_statement(style.code, k) for k in range(sentences_per_emotion)] + shared
            for intensity, scale in (("01", 1.0), ("02", STRONG)):
                if style.name == "neutral" and intensity == "02":
                    continue  # RAVDESS has no strong neutral
                for statement in statements:
                    jitter = rng.integers(-3, 4, size=3)
                    pitch = int(np.clip(round(actor.pitch + scale * style.pitch) + jitter[0], 0, 99))
                    rate = int(np.clip(round(actor.rate + scale * style.rate) + 3 * jitter[1], 80, 450))
                    amplitude = int(np.clip(round(100 + scale * style.amplitude) + 2 * jitter[2], 10, 200))
                    pitch_range = int(np.clip(round(100 + scale * style.range), 10, 200))
                    ssml = f'<speak><prosody range="{pitch_range}%">{escape(texts[statement])}</prosody></speak>'
                    name = f"03-01-{style.code}-{intensity}-{statement}-01-{actor_id:02d}.wav"
                    path = out / f"Actor_{actor_id:02d}" / name
                    command = [exe, "-m", "-v", actor.voice, "-p", str(pitch), "-s", str(rate),
                               "-a", str(amplitude), "-w", str(path), ssml]  # fmt: skip
                    jobs.append(_Job(path, command))
    return jobs


def _render(job: _Job) -> float:
    """Run one espeak-ng command (writing to a temporary name first); the clip's seconds."""
    import soundfile

    tmp = job.path.with_name(f".{job.path.stem}.tmp")
    command = [str(tmp) if arg == str(job.path) else arg for arg in job.command]
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except OSError as err:
        raise SynthError(f"cannot run espeak-ng ({err}): {_quote(job.command)}") from None
    if done.returncode != 0 or not tmp.is_file() or tmp.stat().st_size <= 44:
        tmp.unlink(missing_ok=True)
        raise SynthError(
            f"espeak-ng failed (exit code {done.returncode}) rendering {job.path}:\n"
            f"  {_quote(job.command)}\n  {done.stderr.strip()}"
        )
    os.replace(tmp, job.path)
    return float(soundfile.info(str(job.path)).duration)


def _quote(command: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(arg) for arg in command)


def synthesize(
    out: Path,
    actors: int = 8,
    sentences_per_emotion: int = 4,
    seed: int = 0,
    espeak: str = "espeak-ng",
    workers: int = 2,
) -> SynthSummary:
    """Render the demo corpus into ``out`` (RAVDESS layout + ``transcripts.tsv``).

    Args:
        out: the corpus folder; created if needed. Re-rendering into the same folder with the
            same arguments rewrites the same files; a folder holding other RAVDESS-named clips
            (from other arguments) is refused rather than mixed.
        actors: how many of :data:`DEFAULT_ACTORS` to render (1-8), in that order.
        sentences_per_emotion: emotion-typical sentences per emotion (1-4); every emotion also
            speaks the two shared RAVDESS statements. Clips per actor:
            ``(1 + 7 * 2) * (sentences_per_emotion + 2)``.
        seed: seed of the per-clip prosody jitter.
        espeak: the espeak-ng program (name on ``PATH`` or a path).
        workers: espeak-ng processes run at a time.

    Raises:
        SynthError: espeak-ng is missing, one rendering failed (the message has its command
            line), or ``out`` holds clips this rendering would not write.
    """
    exe = shutil.which(espeak)
    if exe is None:
        raise SynthError(f"{espeak} not found: the demo corpus needs espeak-ng; {INSTALL_HINT}")
    if not 1 <= sentences_per_emotion <= MAX_SENTENCES:
        raise ValueError(f"sentences_per_emotion must be 1 to {MAX_SENTENCES}, not {sentences_per_emotion}")
    if not 1 <= actors <= len(DEFAULT_ACTORS):
        raise ValueError(f"actors must be 1 to {len(DEFAULT_ACTORS)}, not {actors}")
    out = Path(out)
    chosen = list(DEFAULT_ACTORS[:actors])
    jobs = _plan(exe, out, chosen, sentences_per_emotion, seed)
    planned = {job.path for job in jobs}
    stale = sorted(
        path for path in out.glob("Actor_*/*.wav") if _CLIP_NAME.match(path.name) and path not in planned
    )
    if stale:
        raise SynthError(
            f"{out} already holds {len(stale)} clip(s) that this rendering would not write "
            f"(e.g. {stale[0]}), from other arguments; render into an empty folder"
        )
    for path in sorted({job.path.parent for job in jobs}):
        path.mkdir(parents=True, exist_ok=True)
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        seconds = sum(pool.map(_render, jobs))
    finally:  # on a failure, do not render the rest
        pool.shutdown(wait=True, cancel_futures=True)
    texts = statement_texts()
    used = sorted({job.path.name.split("-")[4] for job in jobs})
    lines = ["statement\ttext"] + [f"{statement}\t{texts[statement]}" for statement in used]
    (out / "transcripts.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return SynthSummary(out, len(jobs), chosen, seconds)

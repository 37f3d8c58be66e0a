"""The embedded demo corpus: emotional speech rendered with espeak-ng, in RAVDESS's native layout.

``synthesize(out)`` writes ``out/Actor_XX/03-01-EE-II-SS-RR-XX.wav`` (modality 03 audio-only,
vocal channel 01 speech, emotion EE as RAVDESS numbers them, intensity II 01 normal / 02 strong,
statement SS, repetition RR, actor XX; odd actors male, even female) and ``out/transcripts.tsv``
(``statement<TAB>text``), which ``prepare_ravdess`` reads for the transcripts.

Emotion is carried two ways, as in acted corpora:

- **prosody**: each emotion shifts pitch level (``-p``), speaking rate (``-s``) and loudness
  (``-a``) away from the actor's own neutral voice, and sets the pitch range (SSML
  ``<prosody range>``); strong intensity shifts 1.6 times as far;
- **words**: each emotion has its own emotion-typical sentences (statement numbers
  ``(EE - 1) * sentences + k``), and half of the clips of an emotion use a neutral-content
  sentence shared by all emotions, so prosody alone must carry those.

Actors: the default eight are RAVDESS actors 1 and 20 (in EmoBox's RAVDESS fold 1 test set, so
fold 1 holds out two unseen voices, one male one female) and 2-7. Each actor has its own voice
variant and base pitch / rate, so speaker and emotion are not confounded. espeak-ng is
deterministic: the same arguments give byte-identical files.
"""

from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

#: RAVDESS emotion code -> (name, pitch shift, rate shift (wpm), amplitude shift) from neutral,
#: and pitch range change in percent points from neutral's 100 %.
EMOTIONS: dict[str, tuple[str, int, int, int]] = {
    "01": ("neutral", 0, 0, 0),
    "02": ("calm", -8, -25, -25),
    "03": ("happy", 18, 20, 30),
    "04": ("sad", -18, -45, -35),
    "05": ("angry", 10, 30, 70),
    "06": ("fearful", 25, 45, 5),
    "07": ("disgust", -12, -30, 20),
    "08": ("surprised", 30, 5, 40),
}
RANGE_SHIFT: dict[str, int] = {
    "neutral": 0, "calm": -30, "happy": 50, "sad": -50,
    "angry": 30, "fearful": 35, "disgust": -20, "surprised": 70,
}  # fmt: skip
SENTENCES: dict[str, list[str]] = {
    "neutral": ["The meeting is scheduled for three o'clock.", "Please put the files on the desk.",
                "The train leaves from platform two.", "I bought some bread on the way home."],
    "calm": ["Take your time, everything is fine.", "Let us just relax and breathe slowly.",
             "It is peaceful here by the quiet lake.", "There is no hurry at all, rest now."],
    "happy": ["This is wonderful, I am so happy for you!", "We won, I cannot believe how great this is!",
              "What a lovely surprise party, I love it!", "I got the job, this is the best day ever!"],
    "sad": ["I miss her so much, nothing feels right anymore.", "He is gone and I will never see him again.",
            "I tried so hard and still I failed.", "Everyone left and I am all alone now."],
    "angry": ["I told you to stop doing that right now!", "How dare you lie to me again!",
              "This is outrageous, get out of my office!", "I am sick of your excuses, enough!"],
    "fearful": ["Someone is in the house, I am so scared.", "Please do not hurt me, please.",
                "What was that noise, I am terrified.", "I think we are being followed, help."],
    "disgust": ["Ugh, that smell is revolting.", "This food is rotten and disgusting.",
                "That is gross, I feel sick looking at it.", "Yuck, there is hair in my soup."],
    "surprised": ["Wow, I did not expect to see you here!", "What, you are getting married?",
                  "No way, is that really true?", "Oh, you finished it already?"],
}
#: Shared neutral-content sentences (statement numbers after the emotion-specific ones).
SHARED = ["Kids are talking by the door.", "Dogs are sitting by the door."]
#: Actor -> (espeak-ng voice, base pitch 0-99, base rate wpm).
ACTORS: dict[int, tuple[str, int, int]] = {
    1: ("en-us+m3", 40, 165), 20: ("en-us+f3", 60, 170),
    2: ("en+f2", 62, 160), 3: ("en-gb-scotland+m1", 38, 155),
    4: ("en-gb-x-rp+f4", 58, 175), 5: ("en-029+m2", 45, 170),
    6: ("en-us+f1", 66, 150), 7: ("en-gb+m4", 35, 180),
}
DEFAULT_ACTORS = (1, 20, 2, 3, 4, 5, 6, 7)


class SynthError(RuntimeError):
    """espeak-ng is missing or a rendering failed."""


@dataclass
class SynthSummary:
    out: Path
    clips: int
    actors: list[int]
    seconds: float

    def __str__(self) -> str:
        return (f"demo corpus: {self.clips} clips, {len(self.actors)} actors {self.actors}, "
                f"{self.seconds / 60:.1f} min of speech -> {self.out}")


def _statement_table(sentences_per_emotion: int) -> dict[str, str]:
    table = {}
    for code, (name, *_rest) in EMOTIONS.items():
        for k, text in enumerate(SENTENCES[name][:sentences_per_emotion]):
            table[f"{(int(code) - 1) * sentences_per_emotion + k + 1:02d}"] = text
    start = len(EMOTIONS) * sentences_per_emotion
    for k, text in enumerate(SHARED):
        table[f"{start + k + 1:02d}"] = text
    return table


def synthesize(out: Path, actors: int = 8, sentences_per_emotion: int = 4, seed: int = 0,
               espeak: str = "espeak-ng") -> SynthSummary:
    """Render the demo corpus into ``out`` (RAVDESS layout + ``transcripts.tsv``)."""
    exe = shutil.which(espeak)
    if exe is None:
        raise SynthError(f"{espeak} not found: install it (Debian/Ubuntu: apt-get install espeak-ng)")
    if not 1 <= sentences_per_emotion <= 4:
        raise ValueError("sentences_per_emotion must be 1 to 4")
    if not 1 <= actors <= len(DEFAULT_ACTORS):
        raise ValueError(f"actors must be 1 to {len(DEFAULT_ACTORS)}")
    out = Path(out)
    table = _statement_table(sentences_per_emotion)
    shared_codes = list(table)[-len(SHARED):]
    rng = np.random.default_rng(seed)
    jobs = []
    for actor in DEFAULT_ACTORS[:actors]:
        voice, base_pitch, base_rate = ACTORS[actor]
        for code, (name, dp, ds, da) in EMOTIONS.items():
            own = [f"{(int(code) - 1) * sentences_per_emotion + k + 1:02d}" for k in range(sentences_per_emotion)]
            for intensity, scale in (("01", 1.0), ("02", 1.6)):
                if code == "01" and intensity == "02":
                    continue  # RAVDESS has no strong neutral
                statements = own + shared_codes
                for statement in statements:
                    jitter = rng.integers(-3, 4, size=3)
                    pitch = int(np.clip(base_pitch + scale * dp + jitter[0], 0, 99))
                    rate = int(np.clip(base_rate + scale * ds + 3 * jitter[1], 80, 400))
                    amp = int(np.clip(100 + scale * da + 2 * jitter[2], 10, 200))
                    pitch_range = int(np.clip(100 + scale * RANGE_SHIFT[name], 10, 250))
                    name_ = f"03-01-{code}-{intensity}-{statement}-01-{actor:02d}.wav"
                    path = out / f"Actor_{actor:02d}" / name_
                    ssml = f'<speak><prosody range="{pitch_range}%">{escape(table[statement])}</prosody></speak>'
                    cmd = [exe, "-m", "-v", voice, "-p", str(pitch), "-s", str(rate), "-a", str(amp),
                           "-w", str(path), ssml]
                    jobs.append((path, cmd))
    for path, _ in jobs:
        path.parent.mkdir(parents=True, exist_ok=True)

    def render(job):
        path, cmd = job
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            raise SynthError(f"espeak-ng failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr}")
        import soundfile

        return soundfile.info(str(path)).duration

    with ThreadPoolExecutor(max_workers=4) as pool:
        seconds = sum(pool.map(render, jobs))
    lines = ["statement\ttext"] + [f"{code}\t{text}" for code, text in table.items()]
    (out / "transcripts.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return SynthSummary(out, len(jobs), list(DEFAULT_ACTORS[:actors]), seconds)

"""Audio decoding: any clip (wav, flac, ogg, mp3, mp4/m4a video containers) to mono float32 16 kHz.

soundfile (libsndfile) reads the plain audio formats; PyAV (FFmpeg) reads the rest, including
the audio track of MELD's mp4 clips. Every failure is raised as an :class:`AudioError` whose
message names the file, never as a library's own exception.

Channel policy: a clip's channels are **averaged** unless its manifest row names one
(``channel: K``, 1-based), which only a corpus that says so does (MELD's 5.1 clips: the centre
channel, 3). Loading also refuses clips shorter than :data:`MIN_CLIP_SECONDS` (no encoder can
make a frame of them: :class:`ShortAudioError`) and clips float samples beyond full scale to
[-1, 1], as an integer format would have (``emorl data check`` reports both, and truncated wavs).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

TARGET_SAMPLE_RATE = 16_000
MIN_CLIP_SECONDS = 0.025  #: one 25 ms analysis window (400 samples at 16 kHz): shorter clips are refused
FULL_SCALE = 0.999  #: a sample at or beyond this magnitude is at full scale (clipped)
#: Bumped when what a row's ``channel`` (or its absence) decodes to changes; feature caches key on it.
CHANNEL_POLICY = "average-unless-named-v2"
_SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".aiff", ".aif", ".mp3"}


class AudioError(RuntimeError):
    """A clip that cannot be used; the message names the file and the reason."""


class MissingAudioError(AudioError, FileNotFoundError):
    """The clip's file does not exist."""


class AudioDecodeError(AudioError):
    """The file exists but is not decodable audio (corrupt, truncated, not audio)."""


class EmptyAudioError(AudioError):
    """The file decodes to zero samples."""


class ShortAudioError(AudioError):
    """The clip holds samples, but fewer than :data:`MIN_CLIP_SECONDS` worth."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header where possible."""

    sample_rate: int
    num_frames: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.sample_rate if self.sample_rate else 0.0


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise MissingAudioError(f"audio file {path} does not exist")
    if path.stat().st_size == 0:
        raise EmptyAudioError(f"audio file {path} is empty (0 bytes)")


def _use_soundfile(path: Path) -> bool:
    return path.suffix.lower() in _SOUNDFILE_SUFFIXES


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, frame count and channel count of a clip, without decoding it where possible."""
    path = Path(path)
    _check_exists(path)
    if _use_soundfile(path):
        import soundfile

        try:
            info = soundfile.info(str(path))
            return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))
        except Exception:  # libsndfile cannot read it: let FFmpeg try before giving up
            pass
    waveform, sample_rate = _decode_with_av(path)
    return AudioInfo(sample_rate, waveform.shape[1], waveform.shape[0])


def _decode_with_av(path: Path) -> tuple[np.ndarray, int]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise AudioDecodeError(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
            chunks = []
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    chunks.append(converted.to_ndarray())
            for converted in resampler.resample(None):
                chunks.append(converted.to_ndarray())
            sample_rate = int(stream.rate)
    except AudioError:
        raise
    except Exception as err:
        raise AudioDecodeError(f"cannot decode {path}: {type(err).__name__}: {err}") from None
    if not chunks:
        raise EmptyAudioError(f"{path} decodes to no audio samples")
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), sample_rate


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """All channels of a clip as float32 ``(channels, frames)`` at its own sample rate."""
    path = Path(path)
    _check_exists(path)
    if _use_soundfile(path):
        import soundfile

        try:
            data, sample_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            waveform = np.ascontiguousarray(data.T)
        except Exception:
            waveform, sample_rate = _decode_with_av(path)
    else:
        waveform, sample_rate = _decode_with_av(path)
    if waveform.shape[1] == 0:
        raise EmptyAudioError(f"{path} decodes to no audio samples")
    return waveform, int(sample_rate)


def to_mono(waveform: np.ndarray, channel: int | None = None) -> np.ndarray:
    """One channel of a ``(channels, frames)`` array.

    ``channel`` is 1-based, as in EmoBox manifests (MELD's 6-channel clips carry ``channel: 3``,
    the centre/dialogue channel). When it is ``None`` (the default every preparer writes, see
    the module docstring) or the clip has fewer channels, the channels are averaged.
    """
    if waveform.ndim == 1:
        return waveform
    if channel is not None and 1 <= channel <= waveform.shape[0]:
        return waveform[channel - 1]
    return waveform.mean(axis=0)


def resample(waveform: np.ndarray, orig_sr: int, target_sr: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """High-quality resampling (soxr) of a mono waveform; a no-op at the target rate."""
    if orig_sr <= 0:
        raise AudioError(f"invalid sample rate {orig_sr}")
    if orig_sr == target_sr:
        return waveform.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(waveform, orig_sr, target_sr, quality="HQ").astype(np.float32, copy=False)


def load_audio(
    path: str | os.PathLike,
    sample_rate: int = TARGET_SAMPLE_RATE,
    channel: int | None = None,
) -> np.ndarray:
    """Decode a clip to mono float32 at ``sample_rate`` (16 kHz by default).

    Raises :class:`MissingAudioError`, :class:`EmptyAudioError`, :class:`ShortAudioError` or
    :class:`AudioDecodeError`. Finite samples beyond full scale are clipped to [-1, 1]; NaN and
    infinite samples are left for the caller to see.
    """
    waveform, orig_sr = decode_audio(path)
    check_length(waveform.shape[-1], orig_sr, path)
    return clip_to_full_scale(resample(to_mono(waveform, channel), orig_sr, sample_rate))


def check_length(frames: int, sample_rate: int, path: str | os.PathLike = "clip") -> None:
    """Raise :class:`ShortAudioError` when ``frames`` is under :data:`MIN_CLIP_SECONDS`."""
    if sample_rate > 0 and frames < MIN_CLIP_SECONDS * sample_rate:
        raise ShortAudioError(
            f"{path} holds {frames} sample(s) ({1000 * frames / sample_rate:.2g} ms), under the "
            f"{1000 * MIN_CLIP_SECONDS:g} ms minimum"
        )


def clip_to_full_scale(waveform: np.ndarray) -> np.ndarray:
    """Finite samples limited to [-1, 1]; NaN / infinite samples unchanged."""
    finite = np.isfinite(waveform)
    if finite.all() and (waveform.size == 0 or float(np.abs(waveform).max()) <= 1.0):
        return waveform
    return np.where(finite, np.clip(waveform, -1.0, 1.0), waveform).astype(np.float32, copy=False)


def full_scale_share(waveform: np.ndarray) -> float:
    """Share of the samples at or beyond full scale (|x| >= :data:`FULL_SCALE`); 0 for no samples."""
    if waveform.size == 0:
        return 0.0
    return float(np.mean(np.abs(np.nan_to_num(waveform)) >= FULL_SCALE))


def peak_dbfs(waveform: np.ndarray) -> np.ndarray:
    """Peak level (dB re full scale) of every channel of a ``(channels, frames)`` array."""
    peaks = np.abs(np.nan_to_num(np.atleast_2d(waveform))).max(axis=1)
    return 20 * np.log10(np.maximum(peaks, 1e-12))


def silent_selected_channel(waveform: np.ndarray, channel: int | None, silence_dbfs: float = -60.0) -> bool:
    """True when ``channel`` picks a channel at or under ``silence_dbfs`` while another is above it."""
    if channel is None or waveform.ndim != 2 or not 1 <= channel <= waveform.shape[0] or waveform.shape[0] < 2:
        return False
    levels = peak_dbfs(waveform)
    return bool(levels[channel - 1] <= silence_dbfs and (np.delete(levels, channel - 1) > silence_dbfs).any())


def wav_declared_frames(path: str | os.PathLike) -> int | None:
    """Frames a RIFF/WAVE header declares (``data`` size / block align); None when not a plain wav.

    libsndfile silently shortens a wav whose data chunk runs past the end of the file; comparing
    this with the frames it decodes tells a truncated file (a download or copy cut short). A
    streaming writer's placeholder size (0 or 0xFFFFFFFF) gives None.
    """
    import struct

    block_align = None
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            while True:
                chunk = handle.read(8)
                if len(chunk) < 8:
                    return None
                name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if name == b"fmt ":
                    fmt = handle.read(size + (size & 1))
                    block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                elif name == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    handle.seek(size + (size & 1), os.SEEK_CUR)
    except OSError:
        return None


@dataclass(frozen=True)
class DurationPolicy:
    """What to do with clips longer than ``max_seconds``.

    ``skip`` drops them (EmoBox skips clips over 30 s), ``truncate`` keeps their first
    ``max_seconds``, ``keep`` leaves them whole. ``max_seconds=None`` disables the limit.
    """

    max_seconds: float | None = 30.0
    mode: Literal["skip", "truncate", "keep"] = "skip"

    def __post_init__(self) -> None:
        if self.mode not in ("skip", "truncate", "keep"):
            raise ValueError(f"duration policy mode must be skip, truncate or keep, not {self.mode!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive or None, not {self.max_seconds}")

    def keeps(self, duration: float) -> bool:
        """False when a clip of this duration is skipped."""
        return not (self.mode == "skip" and self.too_long(duration))

    def too_long(self, duration: float) -> bool:
        return self.max_seconds is not None and duration > self.max_seconds

    def apply(self, waveform: np.ndarray, sample_rate: int) -> np.ndarray | None:
        """The waveform to use, or ``None`` when the clip is skipped."""
        duration = waveform.shape[-1] / sample_rate
        if not self.too_long(duration) or self.mode == "keep":
            return waveform
        if self.mode == "skip":
            return None
        return waveform[..., : int(math.floor(self.max_seconds * sample_rate))]


def clip_problems(
    waveform: np.ndarray,
    sample_rate: int,
    max_seconds: float | None = None,
    silence_dbfs: float = -60.0,
) -> list[str]:
    """Problems of a decoded mono clip: ``empty``, ``nan``, ``silent``, ``too-long``.

    A clip is silent when its peak level is below ``silence_dbfs`` (dB relative to full scale).
    """
    if waveform.size == 0:
        return ["empty"]
    problems = []
    finite = np.isfinite(waveform)
    if not finite.all():
        problems.append("nan")
    if finite.any() and float(np.abs(waveform[finite]).max()) <= 10 ** (silence_dbfs / 20):
        problems.append("silent")
    if max_seconds is not None and waveform.shape[-1] / sample_rate > max_seconds:
        problems.append("too-long")
    return problems

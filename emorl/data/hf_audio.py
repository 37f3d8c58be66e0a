"""Audio cells of a Hugging Face dataset -> audio files emorl probes and decodes itself.

A cell is a ``{bytes, path}`` dict (an ``Audio(decode=False)`` column or such a struct), raw bytes,
or a path string. Bytes are written once to the import's audio folder, under the row's key with
the extension of the cell's path or the one the bytes' magic number gives; a path is resolved
against the import's base folders. The file is then probed by :func:`emorl.audio.probe_audio`
(soundfile, else PyAV): no torchcodec anywhere.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Sequence

from emorl.audio import AudioError, AudioInfo, EmptyAudioError, MissingAudioError, probe_audio

_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".mp4", ".aac", ".opus", ".webm", ".aiff", ".aif"}
_MAGIC = ((b"RIFF", ".wav"), (b"fLaC", ".flac"), (b"OggS", ".ogg"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"),
          (b"\xff\xf3", ".mp3"), (b"FORM", ".aiff"))


def audio_suffix(data: bytes, name: str | None) -> str:
    """File extension for audio bytes: the cell path's, else sniffed from the magic number."""
    suffix = Path(name or "").suffix.lower()
    if suffix in _AUDIO_SUFFIXES:
        return suffix
    for magic, guess in _MAGIC:
        if data.startswith(magic):
            return guess
    return ".m4a" if data[4:8] == b"ftyp" else ".bin"  # .bin: emorl.audio falls back to PyAV


def safe_name(key: str) -> str:
    """A key as a file name: no separators or shell-hostile characters; a key that had some gets a
    short hash of itself, so ``a/b`` and ``a_b`` never share a file."""
    safe = re.sub(r"[^\w.=+-]", "_", key)
    return safe if safe == key else f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def materialise(cell: Any, key: str, audio_dir: Path, bases: Sequence[Path]) -> tuple[Path, bool]:
    """The audio file of a cell, and whether this import wrote it.

    Bytes are written to ``audio_dir`` once (an existing file of the same size is kept); a path is
    resolved against ``bases``. Raises :class:`EmptyAudioError` / :class:`MissingAudioError`.
    """
    data, path = cell_parts(cell)
    if data is not None:
        if len(data) == 0:
            raise EmptyAudioError("the audio cell holds 0 bytes")
        target = audio_dir / f"{safe_name(key)}{audio_suffix(data, path)}"
        if target.is_file() and target.stat().st_size == len(data):
            return target, False
        target.write_bytes(data)
        return target, True
    if not path:
        raise MissingAudioError("the audio cell holds neither bytes nor a path")
    candidate = Path(path)
    if not candidate.is_absolute() and bases:  # the first base that has it, else the first base
        candidate = next((base / path for base in bases if (base / path).exists()), bases[0] / path)
    return candidate.absolute(), False


def cell_parts(cell: Any) -> tuple[bytes | None, str | None]:
    """``(bytes, path)`` of an audio cell: a ``{bytes, path}`` dict, raw bytes or a path string."""
    if isinstance(cell, dict):
        return cell.get("bytes"), cell.get("path")
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell), None
    return None, cell


def probe_cell(cell: Any, key: str, audio_dir: Path, bases: Sequence[Path]) -> tuple[Path, AudioInfo] | Exception:
    """Materialise and probe one audio cell; an :class:`AudioError` is returned, not raised
    (the file this import wrote for an unreadable cell is removed)."""
    written = False
    try:
        path, written = materialise(cell, key, audio_dir, bases)
        info = probe_audio(path)
        if info.num_frames <= 0 or info.sample_rate <= 0:
            raise EmptyAudioError(f"{path} holds no audio samples")
        return path, info
    except AudioError as err:
        if written:
            path.unlink(missing_ok=True)
        return err
    except OSError as err:  # writing the bytes failed: the disk, not the row
        raise OSError(f"cannot write the audio of {key} under {audio_dir} ({err}), check the folder and its free space") from None

"""emorl.audio: decoding, resampling, channels, duration policy and clip problems."""

import av
import numpy as np
import pytest
import soundfile as sf

from emorl.audio import (
    AudioDecodeError,
    DurationPolicy,
    EmptyAudioError,
    MissingAudioError,
    clip_problems,
    load_audio,
    probe_audio,
)


def _sine(freq, seconds, sr, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    mono = (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else mono


def _peak_hz(wave, sr):
    spectrum = np.abs(np.fft.rfft(wave))
    return np.fft.rfftfreq(len(wave), 1 / sr)[spectrum.argmax()]


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("fmt", ["wav", "flac"])
def test_resamples_to_16k_preserving_pitch(tmp_path, sr, fmt):
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, _sine(440, 1.5, sr), sr)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 24000) <= 2
    assert abs(_peak_hz(wave, 16000) - 440) < 2


@pytest.mark.parametrize("fmt", ["mp3", "ogg"])
def test_lossy_formats_decode_to_16k_mono(tmp_path, fmt):
    if fmt.upper() not in sf.available_formats():
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) cannot write {fmt}")
    path = tmp_path / f"clip.{fmt}"
    sf.write(path, _sine(440, 1.5, 44100, channels=2), 44100)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 24000) <= 1152  # at most one codec frame of padding
    assert abs(_peak_hz(wave, 16000) - 440) < 2


def test_stereo_is_averaged_unless_a_channel_is_named(tmp_path):
    path = tmp_path / "stereo.wav"
    left = _sine(300, 1.0, 16000)
    right = _sine(700, 1.0, 16000)
    sf.write(path, np.stack([left, right], axis=1), 16000)
    mixed = load_audio(path)
    np.testing.assert_allclose(mixed, (left + right) / 2, atol=1e-4)
    assert abs(_peak_hz(load_audio(path, channel=2), 16000) - 700) < 2
    np.testing.assert_allclose(load_audio(path, channel=9), mixed)  # no such channel: the mix


def _write_mp4(path, data, sr, layout):
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=sr)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T), format="fltp", layout=layout)
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.mark.parametrize("suffix", ["mp4", "m4a"])
def test_aac_in_mp4_decodes_to_16k_with_the_right_length(tmp_path, suffix):
    path = tmp_path / f"clip.{suffix}"
    _write_mp4(path, _sine(440, 2.0, 44100)[:, None], 44100, "mono")
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    # AAC adds priming and pads to whole 1024-sample frames: at most two frames more.
    assert 0 <= len(wave) - 32000 <= 2 * 1024 * 16000 / 44100
    assert abs(_peak_hz(wave, 16000) - 440) < 2
    info = probe_audio(path)
    assert info.sample_rate == 44100 and info.channels == 1


def test_mp4_audio_and_1_based_channel_choice(tmp_path):
    sr = 48000
    t = np.arange(sr) / sr
    data = np.zeros((sr, 6), np.float32)
    data[:, 2] = 0.5 * np.sin(2 * np.pi * 300 * t)  # centre channel: dialogue
    data[:, 0] = 0.5 * np.sin(2 * np.pi * 1000 * t)
    path = tmp_path / "dia0_utt0.mp4"
    _write_mp4(path, data, sr, "5.1")
    info = probe_audio(path)
    assert info.channels == 6 and info.sample_rate == sr and abs(info.duration - 1.0) < 0.05
    centre = load_audio(path, channel=3)
    assert abs(_peak_hz(centre, 16000) - 300) < 3
    assert abs(_peak_hz(load_audio(path, channel=1), 16000) - 1000) < 3
    assert abs(len(centre) - 16000) < 800


def test_missing_empty_and_corrupt_files_are_named_errors(tmp_path):
    with pytest.raises(MissingAudioError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(EmptyAudioError, match="empty.wav"):
        load_audio(empty)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(AudioDecodeError, match="corrupt.wav"):
        load_audio(corrupt)
    not_audio = tmp_path / "notes.mp4"
    not_audio.write_text("this is not a video")
    with pytest.raises(AudioDecodeError, match="notes.mp4"):
        probe_audio(not_audio)
    no_samples = tmp_path / "zero.wav"
    sf.write(no_samples, np.zeros(0, np.float32), 16000)
    with pytest.raises(EmptyAudioError, match="zero.wav"):
        load_audio(no_samples)


def test_duration_policy():
    wave = np.ones(16000 * 5, np.float32)
    assert DurationPolicy(3.0, "skip").apply(wave, 16000) is None
    assert len(DurationPolicy(3.0, "truncate").apply(wave, 16000)) == 48000
    assert len(DurationPolicy(3.0, "keep").apply(wave, 16000)) == 80000
    assert len(DurationPolicy(None, "skip").apply(wave, 16000)) == 80000
    assert DurationPolicy(3.0, "skip").keeps(2.9) and not DurationPolicy(3.0, "skip").keeps(3.1)
    with pytest.raises(ValueError, match="skip, truncate or keep"):
        DurationPolicy(3.0, "drop")
    with pytest.raises(ValueError, match="positive"):
        DurationPolicy(0.0)


def test_clip_problems():
    fine = _sine(200, 1.0, 16000)
    assert clip_problems(fine, 16000, max_seconds=30) == []
    assert clip_problems(np.zeros(16000, np.float32), 16000) == ["silent"]
    assert clip_problems(np.full(100, 1e-5, np.float32), 16000) == ["silent"]
    with_nan = fine.copy()
    with_nan[10] = np.nan
    assert clip_problems(with_nan, 16000) == ["nan"]
    assert clip_problems(fine, 16000, max_seconds=0.5) == ["too-long"]
    assert clip_problems(np.zeros(0, np.float32), 16000) == ["empty"]


def test_an_all_nan_clip_is_nan_not_silent():
    assert clip_problems(np.full(100, np.nan, np.float32), 16000) == ["nan"]

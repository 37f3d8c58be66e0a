"""emorl on real recorded speech (tests/real_speech.py: LibriVox and codec2, from Debian packages).

Skipped with the reason when the packages are absent; in CI (CI=true) a missing file fails.
Tolerance against Praat: emorl's mean F0 (pYIN) within 1.5 semitones (9 %) of the mean F0 of Praat's
``To Pitch`` (autocorrelation, 10 ms step, 75-500 Hz) over the same 16 kHz waveform, on the clips of
``real_speech.PRAAT_COMPARED`` (measured: at most 1.45 semitones, LibriVox 0890; 0.0-0.6 on the
others); female and male mean F0 are about 9 semitones apart.
"""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import yaml

from emorl.audio import TARGET_SAMPLE_RATE, load_audio, probe_audio, resample
from emorl.cli import main
from emorl.commands import run_command
from emorl.data.check import check_corpus
from emorl.prosody.measures import measure_prosody
from tests.corpus_factory import make_tiny_corpus

pytestmark = pytest.mark.real_speech

PRAAT_TOLERANCE_ST = 1.5
CPU = ["--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--data.num_workers", "0"]


def _semitones(a: float, b: float) -> float:
    return abs(12 * np.log2(a / b))


def _praat_mean_f0(wave: np.ndarray) -> float:
    import parselmouth
    from parselmouth.praat import call

    sound = parselmouth.Sound(wave.astype(np.float64), sampling_frequency=TARGET_SAMPLE_RATE)
    pitch = call(sound, "To Pitch", 0.01, 75.0, 500.0)
    return call(pitch, "Get mean", 0, 0, "Hertz")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory, real_speech):
    """Every real clip, codec2's raw files wrapped as wav, and 44.1 kHz copies of two clips."""
    folder = tmp_path_factory.mktemp("real_speech")
    for clip in real_speech.CLIPS:
        shutil.copy(clip.path, folder / f"{clip.name}.wav")
    for name, raw in real_speech.RAW.items():
        real_speech.wrap_raw(raw, folder / f"{name}_raw.wav")
    for name in ("librivox_0870", "codec2_forig"):
        wave, sr = sf.read(folder / f"{name}.wav", dtype="float32")
        sf.write(folder / f"{name}_44k.wav", resample(wave, sr, 44100), 44100, subtype="PCM_16")
    return folder


def test_8_and_16_khz_clips_load_at_16_khz_with_their_length(real_speech):
    rates = set()
    for clip in real_speech.CLIPS:
        info = probe_audio(clip.path)
        assert (info.sample_rate, info.channels) == (clip.sample_rate, 1)
        wave = load_audio(clip.path)
        rates.add(clip.sample_rate)
        assert wave.dtype == np.float32 and abs(len(wave) - info.num_frames * 16000 / info.sample_rate) <= 1
        assert 0.01 < float(np.abs(wave).max()) <= 1.0
    assert rates == {8000, 16000}


def test_a_44_1_khz_copy_loads_to_the_same_waveform(clip_folder):
    for name in ("librivox_0870", "codec2_forig"):
        direct, via_44k = load_audio(clip_folder / f"{name}.wav"), load_audio(clip_folder / f"{name}_44k.wav")
        n = min(len(direct), len(via_44k))
        assert abs(len(direct) - len(via_44k)) <= 1
        error = np.sqrt(np.mean((direct[:n] - via_44k[:n]) ** 2)) / np.sqrt(np.mean(direct[:n] ** 2))
        assert error < 0.02, f"{name}: relative RMS difference {error:.4f} after 16k -> 44.1k -> 16k"


def test_codec2_raw_files_wrapped_as_wav_equal_codec2s_own_wav(real_speech, clip_folder):
    for name in real_speech.RAW:
        info = probe_audio(clip_folder / f"{name}_raw.wav")
        assert (info.sample_rate, info.channels) == (8000, 1)
        np.testing.assert_array_equal(load_audio(clip_folder / f"{name}_raw.wav"), load_audio(clip_folder / f"{name}.wav"))


@pytest.mark.slow  # pYIN on 9 clips, its kernels compiled first: about 17 s on 2 cores
def test_mean_f0_separates_female_from_male_and_agrees_with_praat(real_speech):
    measured = {}
    for clip in real_speech.CLIPS:
        wave = load_audio(clip.path)
        pyin = measure_prosody(wave).pitch_mean_hz
        praat = _praat_mean_f0(wave)
        measured[clip.name] = (clip.gender, pyin, praat)
        if clip.name in real_speech.PRAAT_COMPARED:
            assert _semitones(pyin, praat) <= PRAAT_TOLERANCE_ST, f"{clip.name}: pYIN {pyin:.1f} Hz, Praat {praat:.1f} Hz"
    female = [f0 for gender, f0, _ in measured.values() if gender == "F"]
    male = [f0 for gender, f0, _ in measured.values() if gender == "M"]
    assert min(female) > max(male), measured
    assert 150 < min(female) and max(male) < 130, measured


def test_data_check_passes_strict_on_the_real_clips(clip_folder, tmp_path, capsys):
    entries = [{"key": path.stem, "dataset": "real", "wav": path.name, "emo": "neu",
                "sample_rate": probe_audio(path).sample_rate, "channel": 1}
               for path in sorted(clip_folder.glob("*.wav"))]
    (tmp_path / "real.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    (tmp_path / "label_map.json").write_text(json.dumps({"neu": "Neutral"}))
    assert run_command(["data", "import-emobox", "--manifest", str(tmp_path / "real.jsonl"),
                        "--audio-root", str(clip_folder), "--out", str(tmp_path / "prepared")]) == 0
    report = check_corpus(tmp_path / "prepared", strict=True)
    assert report.num_clips == 14 and report.counts() == {} and report.ok
    assert run_command(["data", "check", str(tmp_path / "prepared"), "--strict"]) == 0
    assert "summary: no problems" in capsys.readouterr().out


def _predicted_keys(path):
    return sorted(json.loads(line)["key"] for line in path.read_text().splitlines())


@pytest.mark.slow
def test_predict_a_folder_of_real_clips_with_a_tiny_lalm(clip_folder, tmp_path, monkeypatch):
    from tests.lalm_fixtures import REPO, tiny_model_dir

    monkeypatch.chdir(tmp_path)
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    main(["predict", "--config", str(REPO / "configs/lalm/qwen2_audio_zeroshot_direct.yaml"), *CPU,
          "--model.init_args.model", str(tiny_model_dir("qwen2-audio")), "--model.init_args.dtype", "float32",
          "--model.init_args.max_new_tokens", "4", "--data.data_dir", str(corpus.root),
          "--data.predict_path", str(clip_folder)])
    written = tmp_path / "runs" / "qwen2_audio_zeroshot_direct" / "version_0" / "predictions.jsonl"
    assert _predicted_keys(written) == sorted(p.stem for p in clip_folder.glob("*.wav"))


@pytest.mark.slow
def test_predict_a_folder_of_real_clips_with_a_probe(clip_folder, tmp_path, monkeypatch):
    from emorl.tiny_models import build_tiny

    monkeypatch.chdir(tmp_path)
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    upstream = build_tiny("wavlm-large", tmp_path / "wavlm")
    config = {
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "logger": {
            "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
            "init_args": {"save_dir": str(tmp_path / "runs"), "name": "probe"}}},
        "model": {"class_path": "emorl.models.probe.LinearProbe",
                  "init_args": {"upstream": str(upstream), "cache_dir": str(tmp_path / "cache"), "hidden_dim": 8}},
        "data": {"data_dir": str(corpus.root), "batch_size": 4, "num_workers": 0},
    }
    (tmp_path / "probe.yaml").write_text(yaml.safe_dump(config))
    main(["predict", "--config", str(tmp_path / "probe.yaml"), "--data.predict_path", str(clip_folder)])
    rows = [json.loads(line) for line in (tmp_path / "runs" / "probe" / "version_0" / "predictions.jsonl")
            .read_text().splitlines()]
    assert sorted(r["key"] for r in rows) == sorted(p.stem for p in clip_folder.glob("*.wav"))
    assert {r["emotion"] for r in rows} <= set(corpus.label_set.classes)
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)

"""tools/bench_grpo.py: one tiny GRPO step against its floor prints every phase and the ratio."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "bench_grpo.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_grpo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_tiny_step_prints_every_phase_the_floor_and_the_ratio(capsys, tmp_path):
    out = tmp_path / "bench.json"
    code = _bench().main(["--device", "cpu", "--steps", "1", "--warmup", "1", "--new-tokens", "4",
                          "--seconds", "1", "--generations", "2", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    for phase in ("generation", "prompt: features + audio tower", "decoding", "rewards", "reference pass",
                  "policy pass", "optimiser", "other", "whole step"):
        assert phase in text, phase
    assert "whole step / floor:" in text
    line = next(line for line in text.splitlines() if line.startswith("whole step "))
    assert float(line.split()[-1]) > 0  # emorl, floor, ratio
    assert "no second copy" in text and "4 new tokens per answer" in text
    assert out.is_file()


def test_compare_trl_without_trl_says_how_to_install_it(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl -> ImportError
    assert _bench().main(["--device", "cpu", "--compare-trl"]) == 2
    assert ".[bench]" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["7b"])
def test_the_7b_folder_has_qwen2_audio_7b_sizes_and_no_weights(tmp_path, size):
    from transformers import Qwen2AudioConfig

    folder = _bench().build_model_folder(size, tmp_path / "m")
    config = Qwen2AudioConfig.from_pretrained(folder)
    text, audio = config.text_config, config.audio_config
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.intermediate_size, text.vocab_size) == (4096, 32, 32, 32, 11008, 156032)
    assert len(text.layer_types) == 32
    assert (audio.d_model, audio.encoder_layers, audio.encoder_attention_heads, audio.encoder_ffn_dim,
            audio.num_mel_bins, audio.max_source_positions) == (1280, 32, 20, 5120, 128, 1500)
    assert not list(folder.glob("*.safetensors"))


@pytest.mark.slow
def test_strategy_fsdp_prints_the_split_under_fsdp_and_ddp_and_their_ratio(tmp_path):
    import json
    import os
    import subprocess

    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--strategy", "fsdp", "--steps", "1", "--warmup", "1",
         "--new-tokens", "4", "--seconds", "1", "--generations", "2", "--full-finetune", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    text = done.stdout
    assert "FSDP/DDP" in text and "whole step FSDP / DDP:" in text
    for phase in ("generation", "decoding", "reference pass", "policy pass", "optimiser", "whole step"):
        assert phase in text, phase
    summary = json.loads(out.read_text())
    assert summary["fsdp_over_ddp"] > 0
    held = {name: sum(values.values()) for name, values in summary["held"].items()}
    assert 0.45 < held["fsdp"] / held["ddp"] < 0.56  # rank 0 holds half the weights, gradients and AdamW states

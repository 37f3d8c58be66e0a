"""An exported Qwen2.5-Omni thinker folder loads with transformers' own processor (``AutoProcessor``), which
needs torchvision (its image and video processors), in a process that never imports emorl.

torchvision only imports beside the torch build it was made for: these tests run in the second
environment (``make test-extras``, which installs it with torch 2.8) and skip in the main one;
``EMORL_EXTRAS=1`` (set by ``make test-extras``) turns that skip into a failure.
"""

import json
import os
import subprocess
import sys

import pytest
import soundfile as sf

pytestmark = pytest.mark.torchvision

if os.environ.get("EMORL_EXTRAS") != "1":
    pytest.importorskip("torchvision", reason="torchvision is not installed here (make test-extras runs these tests)")

from emorl.export import export_model  # noqa: E402
from tests.corpus_factory import make_tiny_corpus  # noqa: E402
from tests.export_runs import train_run  # noqa: E402
from tests.lalm_fixtures import clips  # noqa: E402

PROBE = """
import json, sys
import numpy as np, soundfile as sf
from transformers import AutoProcessor, WhisperFeatureExtractor
folder, wav = sys.argv[1], sys.argv[2]
processor = AutoProcessor.from_pretrained(folder)
audio, rate = sf.read(wav, dtype="float32")
messages = [{"role": "user", "content": [{"type": "audio", "path": wav}, {"type": "text", "text": "Which emotion?"}]}]
text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
inputs = processor(text=text, audio=[audio], sampling_rate=rate, return_tensors="np")
alone = WhisperFeatureExtractor.from_pretrained(folder)(audio, sampling_rate=rate, return_tensors="np")
frames = alone["input_features"].shape[-1]
print(json.dumps({
    "processor": type(processor).__name__,
    "emorl": any(m == "emorl" or m.startswith("emorl.") for m in sys.modules),
    "same_features": bool(np.allclose(inputs["input_features"][0, :, :frames], alone["input_features"][0], atol=1e-5)),
    "audio_tokens": int((inputs["input_ids"][0] == processor.tokenizer.convert_tokens_to_ids(processor.audio_token)).sum()),
}))
"""


def test_an_exported_omni_folder_loads_with_transformers_own_processor(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus", per_speaker_label=1)
    run = train_run("qwen2.5-omni", "lora", corpus.root, tmp_path)
    out = export_model(run.config, run.checkpoint, tmp_path / "exported")
    wav = tmp_path / "clip.wav"
    sf.write(wav, clips((1.5,), seed=4)[0], 16000)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", PROBE, str(out), str(wav)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["processor"] == "Qwen2_5OmniProcessor" and not found["emorl"]
    assert found["same_features"]  # the processor's audio features are the feature extractor's
    assert found["audio_tokens"] > 0  # the chat template and the processor expand the audio placeholder

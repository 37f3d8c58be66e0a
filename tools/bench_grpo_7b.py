"""Time GRPO steps of a randomly initialised Qwen2-Audio at the real 7B size on one GPU.

    python tools/bench_grpo_7b.py --steps 4 --new-tokens 256 [--out results.json]

The model is built on the GPU from Qwen2-Audio-7B-Instruct's sizes (random bf16 weights, 8.4 B
parameters: nothing to download), then goes through emorl's own ``load_backbone`` (LoRA r 8 on
the language model, gradient checkpointing) and ``GRPOLALM`` steps driven by a Lightning Trainer,
with configs/emorl_esr.yaml's settings: G 6, beta 0.04, ESR prompts, one 10 s clip per step (the
feature extractor pads it to 30 s, 750 audio tokens, as for every real clip). End-of-sequence is
disabled, so every answer runs to ``--new-tokens`` (the worst case). Prints each step's split
(generation, rewards, reference pass, policy pass, optimiser), the median after the first step
and the peak CUDA memory.
"""
import argparse
import json
import os
import tempfile
import time
import numpy as np
import torch
import lightning as L
from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

from emorl.lalm.tiny import build_tiny_family
from emorl.models.grpo import GRPOLALM

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=4)
parser.add_argument("--new-tokens", type=int, default=256)
parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "grpo_7b.json"))
options = parser.parse_args()
NEW, STEPS = options.new_tokens, options.steps
if not torch.cuda.is_available():
    raise SystemExit("bench_grpo_7b needs a CUDA GPU with about 24 GB free")
tiny = build_tiny_family("qwen2-audio", tempfile.mkdtemp())
config = Qwen2AudioConfig.from_pretrained(tiny)
config.text_config.update(dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                               num_key_value_heads=32, vocab_size=156032, max_position_embeddings=8192, rope_theta=10000.0))
config.text_config.layer_types = ["full_attention"] * 32
if hasattr(config.text_config, "head_dim"):
    config.text_config.head_dim = 128
config.audio_config.update(dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120))

def build_7b(cls, path, **kwargs):
    t = time.perf_counter()
    with torch.device("cuda"):
        model = Qwen2AudioForConditionalGeneration._from_config(config, dtype=torch.bfloat16,
                                                                attn_implementation=kwargs.get("attn_implementation", "sdpa"))
    model.generation_config.eos_token_id = [10**6]  # never: every answer runs to max_new_tokens (worst case)
    model.generation_config.pad_token_id = 0
    print(f"built 7B-size model on GPU in {time.perf_counter() - t:.1f}s: "
          f"{sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params", flush=True)
    return model

Qwen2AudioForConditionalGeneration.from_pretrained = classmethod(build_7b)
module = GRPOLALM(["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"], model=str(tiny),
                  dtype="bfloat16", num_generations=6, max_new_tokens=NEW, beta=0.04, lora={"r": 8, "alpha": 16, "dropout": 0.05},
                  gradient_checkpointing=True, logprob_micro_batch=6, accumulate_grad_batches=1, lr=1e-6,
                  prompt_format="esr")
after_load = torch.cuda.memory_allocated() / 2**30
rng = np.random.default_rng(0)

class Clips(torch.utils.data.Dataset):
    def __len__(self): return 64
    def __getitem__(self, i):
        wave = torch.from_numpy(rng.standard_normal(160000).astype(np.float32) * 0.1)  # 10 s at 16 kHz
        return {"wave": wave, "wave_lengths": torch.tensor(160000), "label": torch.tensor(i % 7), "key": f"clip{i}"}

def collate(items):
    return {"wave": torch.stack([x["wave"] for x in items]), "wave_lengths": torch.stack([x["wave_lengths"] for x in items]),
            "label": torch.stack([x["label"] for x in items]), "key": [x["key"] for x in items]}

rows = []
class Timer(L.Callback):
    def on_train_batch_start(self, *a): torch.cuda.synchronize(); self.t = time.perf_counter()
    def on_train_batch_end(self, trainer, m, *a):
        torch.cuda.synchronize()
        r = m.last_rollout
        rows.append({"step_s": time.perf_counter() - self.t, **{k: round(v, 3) for k, v in r.timings.items()},
                     **{k: round(v, 3) for k, v in m.last_update_seconds.items()},
                     "tokens": int(r.completion_mask.sum()), "answers": len(r)})
        print(rows[-1], flush=True)

trainer = L.Trainer(max_steps=STEPS, accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Timer()])
torch.cuda.reset_peak_memory_stats()
trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Clips(), batch_size=1, collate_fn=collate))
peak = torch.cuda.max_memory_allocated() / 2**30
steady = rows[1:] or rows
med = {k: float(np.median([r[k] for r in steady])) for k in steady[0] if k not in ("answers",)}
summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "new_tokens": NEW, "G": 6,
           "weights_GiB_after_load": round(after_load, 2), "peak_GiB": round(peak, 2), "median_after_first": med, "steps": rows}
print(json.dumps(summary, indent=1))
with open(options.out, "w") as handle:
    handle.write(json.dumps(summary, indent=1))

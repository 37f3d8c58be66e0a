"""One GRPO step split into its phases, against its floor and (optionally) against TRL's GRPOTrainer.

    python tools/bench_grpo.py                                    # tiny Qwen2-Audio, CPU (about a minute)
    python tools/bench_grpo.py --compare-trl                      # + TRL on the same text model (needs TRL)
    python tools/bench_grpo.py --size 7b --device cuda            # Qwen2-Audio-7B-Instruct's sizes, bf16, one GPU
    python tools/bench_grpo.py --device cpu --strategy fsdp       # 2 CPU processes: FSDP2 vs DDP, same step

What runs: :class:`emorl.models.grpo.GRPOLALM` itself, driven by a Lightning ``Trainer`` (manual
optimisation, TensorBoard logging every step as configs/emorl_esr.yaml), on a randomly initialised
Qwen2-Audio: ``--size tiny`` (the zoo's tiny sizes) or ``--size 7b`` (Qwen2-Audio-7B-Instruct's
sizes: audio encoder d_model 1280, 32 layers, 20 heads, FFN 5120, 128 mel bins, 1500 positions; Qwen2
text model hidden 4096, 32 layers, 32 heads / 32 kv heads, intermediate 11008, vocab 156032, rope
theta 10000; 8.4 B parameters). Both sizes take the same path: ``emorl.lalm.tiny.build_tiny_family``
writes the tokenizer, the processor, the chat template and the generation config, ``config.json``
is rewritten with the chosen sizes, and ``emorl.lalm.load_backbone`` (through ``GRPOLALM``) loads
that folder, its ``from_pretrained`` building random weights straight on ``--device`` in ``--dtype``
instead of reading a checkpoint (nothing downloaded, nothing written but the small folder). LoRA
and the rest are then ``load_backbone``'s own: LoRA r 8 / alpha 16 / dropout 0.05 on the language
model's projections, gradient checkpointing, ESR prompts, G 6, beta 0.04, one clip of
``--seconds`` per prompt. Every answer is forced to ``--new-tokens`` tokens (end-of-turn tokens are
suppressed via ``min_new_tokens``; the ``</answer>`` stop criterion stays on), so every step, the
floor and TRL do the same amount of work.

The tokenizer is the tiny one (a 640-token BPE) at both sizes: costs that grow with the
vocabulary are not in the 7B figures. The one that matters: transformers rebuilds its stop-string
table (``StopStringCriteria``) on every ``generate`` call, its cache never hitting because
``tokenizer.get_vocab()`` comes back in a different order each call; that is about 8 ms at 640
tokens and 1.4 s for a Qwen2Tokenizer of Qwen2's size, 151,647 tokens (a synthetic vocabulary,
timed on this repo's 2-core CPU machine), per GRPO step.
emorl now builds it once per tokenizer (``emorl.lalm.generation.stop_string_criteria``).

The floor runs the policy and reference passes as full sequences (prompt + answer, G times per
prompt), as TRL does; emorl's passes run each prompt once and share its keys and values among its
G answers (``emorl.lalm.scoring``), so emorl's step can be below its floor.

On a GPU machine with torch, transformers, peft and lightning (nothing else of emorl's
dependencies is needed: no librosa, soundfile, jsonargparse or datasets; the script puts the
checkout on ``sys.path``), from the checkout::

    python3 tools/bench_grpo.py --size 7b --device cuda --steps 5 --json bench_grpo_7b.json

Printed (medians over ``--steps`` steps after ``--warmup`` warm-up steps):

* the step split into generation (prompt features and the audio tower, decoding, answer
  post-processing), rewards, reference pass, policy pass (forward + backward), optimiser and the rest
  (Lightning, logging, the data loader) as ``GRPOLALM`` records them (CUDA-synchronised clocks);
* the floor of the same step, measured right after each timed step on the same model with plain
  transformers / torch calls: the processor's features and one audio-tower call per clip, one
  ``generate`` of exactly the step's number of new tokens (``min_new_tokens = max_new_tokens``),
  one forward + backward over prompt + completions of all answers at once, and, when beta > 0,
  one no-grad forward with the adapter disabled. Target: whole step / floor <= 1.10;
* memory: the weights, the LoRA weights, the peak (CUDA: ``max_memory_allocated``; CPU: the
  process's peak RSS) against the weights: under LoRA the reference pass is the same model with the
  adapter disabled, so no second copy of the base weights exists.

``--compare-trl``: the same step in TRL's ``GRPOTrainer`` (needs ``pip install -e '.[bench]'``, in
an environment of its own, e.g. ``.venv-bench``). TRL has no audio input, so the fairest pairing is:
TRL trains a text-only ``Qwen2ForCausalLM`` holding exactly the Qwen2-Audio's language model (the
same weights, copied over, and the same tokenizer), on prompts that are emorl's own prompts *as
tokens*: the rendered chat prompt with the audio placeholder expanded to one ``<|AUDIO|>`` per audio
frame, so TRL's prompt has the same number of tokens as emorl's merged audio + text prompt. Identical:
G, beta, epsilon, loss type (``grpo``), group reward scaling, temperature / top-p, the number of new
tokens (both forced to ``--new-tokens``), one generation per optimiser step, LoRA (same targets, r,
alpha, dropout), gradient checkpointing, AdamW at lr 1e-6, gradient clipping at 1.0, logging every
step, and the rewards (TRL calls emorl's own reward set). emorl still does its audio work (features
and the audio tower, which TRL skips), so the ratio is conservative; it is also printed without it.
Target: TRL's step / emorl's step >= 1.25. TRL's own floor (the same plain calls on its model) is
printed too. TRL samples in train mode (its LoRA dropout is active while generating) and switches
gradient checkpointing off and on around every generation: both are part of its step.
"""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import functools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing it
    sys.path.insert(0, str(ROOT))

CLASSES = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]
SAMPLING_RATE = 16_000
#: Qwen/Qwen2-Audio-7B-Instruct's config.json (the sizes; the token ids stay the tiny tokenizer's).
QWEN2_AUDIO_7B = {
    "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 156032, "max_position_embeddings": 8192,
             "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}},
    "audio": {"d_model": 1280, "encoder_layers": 32, "encoder_attention_heads": 20, "encoder_ffn_dim": 5120,
              "num_mel_bins": 128, "max_source_positions": 1500},
}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TRL_MISSING = ("--compare-trl needs TRL (not installed in this environment). Install it beside emorl in an "
               "environment of its own:\n    python3 -m venv .venv-bench && .venv-bench/bin/pip install -e '.[bench]'\n"
               "then run .venv-bench/bin/python tools/bench_grpo.py --compare-trl")


# -- clocks --------------------------------------------------------------------------------------
def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Clock:
    """``perf_counter`` after waiting for the device's queued kernels."""

    def __init__(self, device) -> None:
        self.device = torch.device(device)

    def __call__(self) -> float:
        _sync(self.device)
        return time.perf_counter()


def _median(values) -> float:
    values = [v for v in values if v is not None]
    return float(statistics.median(values)) if values else float("nan")


# -- the model folder and random weights built in place -----------------------------------------
def build_model_folder(size: str, out: Path) -> Path:
    """The tiny Qwen2-Audio folder of ``emorl zoo tiny`` (tokenizer, processor, chat template,
    generation config), its ``config.json`` rewritten with ``size``'s sizes and no weights file:
    :func:`random_weights` builds the weights when ``load_backbone`` asks for them."""
    from transformers import Qwen2AudioConfig

    from emorl.lalm.tiny import build_tiny_family

    folder = build_tiny_family("qwen2-audio", out, seed=0)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    if size == "7b":
        base = Qwen2AudioConfig.from_pretrained(folder)
        drop = ("layer_types", "head_dim", "rope_parameters", "rope_theta", "max_window_layers",
                "transformers_version", "architectures", "dtype", "torch_dtype")
        text = {k: v for k, v in base.text_config.to_dict().items() if k not in drop}
        audio = {k: v for k, v in base.audio_config.to_dict().items() if k not in drop}
        text.update(QWEN2_AUDIO_7B["text"])
        audio.update(QWEN2_AUDIO_7B["audio"])
        config = Qwen2AudioConfig(audio_config=audio, text_config=text, audio_token_index=base.audio_token_index)
        config.save_pretrained(folder)
    return folder


@contextlib.contextmanager
def random_weights(device: str, seed: int = 0):
    """Inside the block ``Qwen2AudioForConditionalGeneration.from_pretrained(folder, dtype=...,
    attn_implementation=...)`` builds the folder's config with random weights directly on ``device``
    (a 7B model in bf16 never exists on the CPU or on disk); everything else of ``load_backbone``
    (processor, LoRA, gradient checkpointing) runs unchanged."""
    from transformers import GenerationConfig, Qwen2AudioConfig, Qwen2AudioForConditionalGeneration

    cls = Qwen2AudioForConditionalGeneration
    own = cls.__dict__.get("from_pretrained")

    def build(klass, path, dtype=None, attn_implementation=None, **kwargs):
        config = Qwen2AudioConfig.from_pretrained(path)
        torch.manual_seed(seed)
        with torch.device(device):
            model = klass._from_config(config, dtype=dtype, attn_implementation=attn_implementation or "sdpa")
        model.generation_config = GenerationConfig.from_pretrained(path)
        return model

    cls.from_pretrained = classmethod(build)
    try:
        yield
    finally:
        if own is not None:
            cls.from_pretrained = own
        else:
            del cls.from_pretrained


# -- the floor: plain transformers / torch calls -------------------------------------------------
def _positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def floor_step(parts: dict, prompt_fn, new_tokens: int, generations: int, beta: float, clock: Clock) -> dict:
    """One floor step: ``prompt_fn()`` -> (B, P, H) prompt embeddings and (B, P) mask (no grad), one
    ``generate`` of exactly ``new_tokens`` tokens for ``generations`` answers per prompt, one forward +
    backward over prompt + completions, one no-grad forward with the adapter disabled (beta > 0).

    ``parts``: ``hf`` (the transformers model: ``generate``), ``decoder`` (its decoder stack),
    ``head`` (``lm_head``), ``embed`` (input embeddings), ``peft`` (the peft model), ``eos``, ``pad``.
    """
    hf, decoder, head, embed, peft_model = parts["hf"], parts["decoder"], parts["head"], parts["embed"], parts["peft"]
    seconds = {}
    start = clock()
    with torch.no_grad():
        embeds, mask = prompt_fn()
    seconds["prompt"] = clock() - start
    embeds = embeds.repeat_interleave(generations, 0)
    mask = mask.repeat_interleave(generations, 0)
    start = clock()
    was_training = hf.training
    hf.eval()
    with torch.no_grad():
        out = hf.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                          top_k=0, min_new_tokens=new_tokens, max_new_tokens=new_tokens, eos_token_id=parts["eos"],
                          pad_token_id=parts["pad"], use_cache=True)
    hf.train(was_training)
    completion = out[:, -new_tokens:] if out.shape[1] > new_tokens else out
    seconds["decode"] = clock() - start
    if completion.shape[1] != new_tokens:
        raise RuntimeError(f"the floor generated {completion.shape[1]} tokens, not {new_tokens}")
    full_mask = torch.cat([mask, torch.ones_like(completion, dtype=mask.dtype)], dim=1)
    length = embeds.shape[1]

    def logps() -> torch.Tensor:
        full = torch.cat([embeds, embed(completion)], dim=1)
        hidden = decoder(inputs_embeds=full, attention_mask=full_mask, position_ids=_positions(full_mask),
                         use_cache=False).last_hidden_state
        logits = head(hidden[:, length - 1 : -1]).float()
        return torch.log_softmax(logits, -1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)

    start = clock()
    loss = -logps().mean()
    loss.backward()
    seconds["policy"] = clock() - start
    for p in peft_model.parameters():
        p.grad = None
    seconds["reference"] = 0.0
    if beta > 0:
        start = clock()
        with torch.no_grad(), peft_model.disable_adapter():
            logps()
        seconds["reference"] = clock() - start
    seconds["total"] = sum(seconds[k] for k in ("prompt", "decode", "policy", "reference"))
    return seconds


def audio_parts(backbone) -> dict:
    hf = backbone.hf_model
    return {"hf": hf, "decoder": backbone.language_model, "head": hf.lm_head, "embed": backbone.input_embeddings(),
            "peft": backbone.model, "eos": backbone.eos_token_ids, "pad": backbone.pad_token_id}


def audio_prompt_fn(backbone, messages, waves):
    """Plain calls: the chat template, the processor (features, placeholder expansion), one audio
    tower + projector call for the batch, the features written over the audio tokens."""
    from emorl.lalm.inputs import render_prompts

    def prompt():
        hf = backbone.hf_model
        texts = render_prompts(backbone, messages)
        batch = backbone.processor(text=texts, audio=waves, sampling_rate=SAMPLING_RATE, return_tensors="pt",
                                   padding=True, padding_side="left").to(backbone.device)
        tower = hf.model.audio_tower
        features = hf.model.multi_modal_projector(
            tower(batch["input_features"].to(tower.conv1.weight.dtype)).last_hidden_state)
        ids = batch["input_ids"]
        is_audio = ids == backbone.audio_token_id
        counts = is_audio.sum(-1).tolist()
        merged = torch.cat([features[i, :n] for i, n in enumerate(counts)])
        embeds = backbone.input_embeddings()(ids)
        embeds = embeds.masked_scatter(is_audio.unsqueeze(-1), merged.to(embeds.dtype))
        return embeds, batch["attention_mask"]

    return prompt


# -- emorl ---------------------------------------------------------------------------------------
def make_clips(count: int, seconds: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(seconds * SAMPLING_RATE))).astype(np.float32) for _ in range(count)]


class ClipSet(torch.utils.data.Dataset):
    def __init__(self, clips) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        wave = torch.from_numpy(self.clips[i])
        return {"wave": wave, "wave_lengths": torch.tensor(len(wave)), "label": torch.tensor(i % len(CLASSES)),
                "key": f"clip{i}"}


def collate(items: list[dict]) -> dict:
    length = max(len(x["wave"]) for x in items)
    wave = torch.zeros(len(items), length)
    for i, x in enumerate(items):
        wave[i, : len(x["wave"])] = x["wave"]
    return {"wave": wave, "wave_lengths": torch.stack([x["wave_lengths"] for x in items]),
            "label": torch.stack([x["label"] for x in items]), "key": [x["key"] for x in items]}


def _logger(out: Path):
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return TensorBoardLogger(str(out), name="bench_grpo")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.data_ptr())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def run_emorl(args, folder: Path, work: Path, clock: Clock) -> dict:
    import lightning as L

    from emorl.models.grpo import GRPOLALM
    from emorl.lalm.answers import clips_from_batch

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with random_weights(args.device, args.seed):
        module = GRPOLALM(
            CLASSES, model=str(folder), dtype=args.dtype, num_generations=args.generations,
            max_new_tokens=args.new_tokens, beta=args.beta, temperature=1.0, top_p=1.0,
            lora=None if args.full_finetune else {"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.05},
            full_finetune=args.full_finetune,
            gradient_checkpointing=args.gradient_checkpointing, logprob_micro_batch=args.micro_batch or args.generations,
            accumulate_grad_batches=1, gradient_clip_val=1.0, lr=1e-6, prompt_format="esr", answers_to_log=8,
        )
    # every answer runs to max_new_tokens (end-of-turn suppressed until then), as in the floor and TRL
    module.rollout_options = dataclasses.replace(module.rollout_options, min_new_tokens=args.new_tokens)
    backbone = module.backbone
    base = [p for n, p in backbone.model.named_parameters() if "lora_" not in n]
    lora = [p for n, p in backbone.model.named_parameters() if "lora_" in n]
    memory = {"weights_bytes": _tensor_bytes(base), "lora_bytes": _tensor_bytes(lora),
              "reference_copy": module.reference is not None,
              "params": sum(p.numel() for p in base), "lora_params": sum(p.numel() for p in lora)}
    if device.type == "cuda":
        memory["allocated_after_load"] = torch.cuda.memory_allocated()
    per_rank = (args.warmup + args.steps) * args.prompts
    clips = make_clips(per_rank * getattr(args, "processes", 1), args.seconds, args.seed)
    loader = torch.utils.data.DataLoader(ClipSet(clips), batch_size=args.prompts, shuffle=False, collate_fn=collate)
    rows: list[dict] = []
    floors: list[dict] = []
    info: dict = {}

    class Recorder(L.Callback):
        last_end: float | None = None
        start = 0.0
        gap = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            now = clock()
            self.gap = None if self.last_end is None else now - self.last_end
            self.start = now

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            now = clock()
            rollout = pl_module.last_rollout  # its timings: prompt, decode, answers, generate, rewards, reference
            row = {"inside": now - self.start, "gap": self.gap, **{k: float(v) for k, v in rollout.timings.items()},
                   **{k: float(v) for k, v in pl_module.last_update_seconds.items()},
                   "tokens": int(rollout.completion_mask.sum()), "decode_steps": int(rollout.completion_ids.shape[1]),
                   "answers_n": len(rollout), "prompt_tokens": int(rollout.prompt.lengths.max())}
            if batch_idx >= args.warmup:
                rows.append(row)
                if device.type == "cuda" and "peak_steps" not in info:
                    info["peak_steps"] = 0
                if device.type == "cuda":
                    info["peak_steps"] = max(info["peak_steps"], torch.cuda.max_memory_allocated())
                if not args.no_floor:
                    messages = pl_module.prompts.messages(batch["key"])
                    waves = clips_from_batch(batch)
                    floors.append(floor_step(audio_parts(backbone), audio_prompt_fn(backbone, messages, waves),
                                             row["decode_steps"], args.generations, args.beta, clock))
            if args.verbose:
                print(f"  emorl step {batch_idx}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in row.items() if v is not None), flush=True)
            self.last_end = clock()

    trainer = L.Trainer(
        max_steps=args.warmup + args.steps, accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=getattr(args, "processes", 1), strategy=getattr(args, "trainer_strategy", "auto"),
        logger=_logger(work), log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[Recorder()],
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, train_dataloaders=loader)
    if device.type == "cuda":
        memory["peak_steps"] = info.get("peak_steps", torch.cuda.max_memory_allocated())
        memory["peak_with_floor"] = torch.cuda.max_memory_allocated()
    memory["peak_rss_mib"] = _peak_rss_mib()
    from emorl.lalm.sharding import local_bytes

    memory["local"] = local_bytes(module, trainer.optimizers[0] if trainer.optimizers else None)
    for row in rows:
        row["step"] = row["inside"] + (row["gap"] or 0.0)
        row["other"] = row["step"] - sum(row[k] for k in ("generate", "rewards", "reference", "policy", "optimizer"))
    return {"rows": rows, "floors": floors, "memory": memory, "module": module, "clips": clips}


# -- TRL -----------------------------------------------------------------------------------------
def text_model_like(backbone, out: Path):
    """A ``Qwen2ForCausalLM`` holding the Qwen2-Audio's language model and head (same weights), and
    the tokenizer, saved to ``out``."""
    from transformers import Qwen2ForCausalLM

    hf = backbone.hf_model
    config = hf.config.text_config
    with torch.device(backbone.device):
        model = Qwen2ForCausalLM._from_config(config, dtype=backbone.dtype, attn_implementation="sdpa")
    state = {}
    for key, value in backbone.language_model.state_dict().items():
        if "lora_" not in key:
            state["model." + key.replace(".base_layer", "")] = value
    state["lm_head.weight"] = hf.lm_head.weight
    model.load_state_dict(state, strict=True)
    model.generation_config.eos_token_id = backbone.eos_token_ids
    model.generation_config.pad_token_id = backbone.pad_token_id
    return model


def run_trl(args, emorl: dict, work: Path, clock: Clock) -> dict:
    try:
        import trl
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import TrainerCallback
    except ImportError:
        raise SystemExit(TRL_MISSING) from None

    from emorl.lalm.inputs import build_prompts
    from emorl.rl.rewards import RewardContext

    module = emorl["module"]
    backbone = module.backbone
    total = (args.warmup + args.steps) * args.prompts
    keys = [f"clip{i}" for i in range(total)]
    labels = [CLASSES[i % len(CLASSES)] for i in range(total)]
    with torch.no_grad():
        batch = build_prompts(backbone, module.prompts.messages(keys), emorl["clips"], device="cpu")
    tokenizer = backbone.tokenizer
    prompts = [tokenizer.decode(ids[mask.bool()].tolist(), skip_special_tokens=False)
               for ids, mask in zip(batch.input_ids, batch.attention_mask)]
    emorl_lengths = batch.attention_mask.sum(-1).tolist()
    trl_lengths = [len(ids) for ids in tokenizer(text=prompts)["input_ids"]]
    model = text_model_like(backbone, work / "qwen2-text")
    rewards, context = module.rewards, RewardContext(classes=CLASSES, alpha=1.0, gamma=module.hparams.gamma)

    def emorl_rewards(completions, label, **kwargs):
        return rewards(list(completions), list(label), context)[0].tolist()

    emorl_rewards.__name__ = "emorl_rewards"
    device = torch.device(args.device)
    config = trl.GRPOConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=args.prompts * args.generations,
        num_generations=args.generations, max_completion_length=args.new_tokens,
        generation_kwargs={"min_new_tokens": args.new_tokens}, beta=args.beta, epsilon=0.2, loss_type="grpo",
        scale_rewards="group", num_iterations=1, gradient_accumulation_steps=1, temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=1e-6, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", gradient_checkpointing=args.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False}, max_steps=args.warmup + args.steps,
        logging_steps=1, report_to="none", save_strategy="no", use_cpu=device.type == "cpu",
        bf16=args.dtype in ("bfloat16", "bf16") and device.type == "cuda", dataloader_num_workers=0, seed=args.seed,
        shuffle_dataset=False, log_completions=False, disable_dropout=False, mask_truncated_completions=False,
        remove_unused_columns=False, disable_tqdm=True,
    )
    peft_config = LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.05,
                             target_modules=LORA_TARGETS, bias="none", task_type="CAUSAL_LM")
    dataset = Dataset.from_dict({"prompt": prompts, "label": labels})
    steps: list[float] = []
    floors: list[dict] = []
    state: dict = {}

    class Recorder(TrainerCallback):
        def on_step_end(self, targs, tstate, control, **kwargs):
            now = clock()
            if state.get("last") is not None and tstate.global_step > args.warmup:
                steps.append(now - state["last"])
                if not args.no_floor:
                    peft_model = state["trainer"].model
                    hf = peft_model.get_base_model()
                    parts = {"hf": hf, "decoder": hf.model, "head": hf.lm_head, "embed": hf.get_input_embeddings(),
                             "peft": peft_model, "eos": backbone.eos_token_ids, "pad": backbone.pad_token_id}
                    row = tstate.global_step - 1
                    ids = tokenizer(text=prompts[row * args.prompts:(row + 1) * args.prompts], return_tensors="pt",
                                    padding=True, padding_side="left").to(hf.device)

                    def prompt():
                        return hf.get_input_embeddings()(ids["input_ids"]), ids["attention_mask"]

                    floors.append(floor_step(parts, prompt, args.new_tokens, args.generations, args.beta, clock))
            state["last"] = clock()

    trainer = trl.GRPOTrainer(model=model, reward_funcs=emorl_rewards, args=config, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=peft_config, callbacks=[Recorder()])
    state["trainer"] = trainer
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for quiet in (PrinterCallback, ProgressCallback):  # TRL's per-step log dicts: not part of the table
        trainer.remove_callback(quiet)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    result = {"steps": steps, "floors": floors, "version": trl.__version__, "prompt_tokens_emorl": emorl_lengths,
              "prompt_tokens_trl": trl_lengths}
    if device.type == "cuda":
        result["peak"] = torch.cuda.max_memory_allocated()
    return result


# -- report --------------------------------------------------------------------------------------
def _fmt(value: float | None, width: int = 9) -> str:
    if value is None or value != value:
        return " " * (width - 1) + "-"
    return f"{value:{width}.3f}" if value < 100 else f"{value:{width}.1f}"


def _bytes(count: float) -> str:
    return f"{count / 2**30:.2f} GiB" if abs(count) >= 2**30 else f"{count / 2**20:.2f} MiB"


def report(args, emorl: dict, trl_result: dict | None) -> dict:
    rows, floors, memory = emorl["rows"], emorl["floors"], emorl["memory"]
    med = {k: _median([r[k] for r in rows]) for k in
           ("step", "generate", "prompt", "decode", "answers", "rewards", "reference", "policy", "optimizer", "other")}
    fl = {k: _median([f[k] for f in floors]) for k in ("prompt", "decode", "policy", "reference", "total")} if floors else {}
    fl_gen = fl.get("prompt", float("nan")) + fl.get("decode", float("nan")) if fl else float("nan")
    size = {"tiny": "tiny", "7b": "7B-size"}[args.size]
    first = rows[0]
    print(f"GRPO step, emorl GRPOLALM on a {size} Qwen2-Audio (random weights), {args.device} {args.dtype}, "
          f"torch {torch.__version__}")
    print(f"G {args.generations}, {args.prompts} prompt(s) of one {args.seconds:g} s clip ({first['prompt_tokens']} prompt "
          f"tokens), {first['decode_steps']} new tokens per answer (forced; {first['tokens']} counted in the loss), "
          f"beta {args.beta:g}, LoRA r {args.lora_r}, gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}; "
          f"medians of {len(rows)} steps after {args.warmup} warm-up")
    print()
    print(f"{'phase':<44}{'emorl s':>9}{'floor s':>9}{'ratio':>8}")
    table = [
        ("generation", med["generate"], fl_gen),
        ("  prompt: features + audio tower (once/clip)", med["prompt"], fl.get("prompt")),
        ("  decoding (transformers generate)", med["decode"], fl.get("decode")),
        ("  answers: ids -> text, stop string", med["answers"], None),
        ("rewards", med["rewards"], None),
        ("reference pass (adapter off, no grad)", med["reference"], fl.get("reference") if args.beta > 0 else None),
        ("policy pass (forward + backward)", med["policy"], fl.get("policy")),
        ("optimiser (clip + AdamW)", med["optimizer"], None),
        ("other (Lightning, logging, data)", med["other"], None),
        ("whole step", med["step"], fl.get("total")),
    ]
    for name, value, floor in table:
        ratio = f"{value / floor:8.2f}" if floor and floor == floor and floor > 0 else " " * 7 + "-"
        print(f"{name:<44}{_fmt(value)}{_fmt(floor)}{ratio}")
    floor_ratio = med["step"] / fl["total"] if fl else float("nan")
    if fl:
        verdict = "met" if floor_ratio <= 1.10 else "NOT met"
        print(f"whole step / floor: {floor_ratio:.2f} (target <= 1.10: {verdict})")
    print()
    weights = memory["weights_bytes"]
    print(f"memory: base weights {_bytes(weights)} ({memory['params'] / 1e6:,.1f} M params), LoRA "
          f"{_bytes(memory['lora_bytes'])} ({memory['lora_params'] / 1e6:.2f} M params); reference pass = "
          f"{'a frozen copy' if memory['reference_copy'] else 'the same weights with the adapter disabled (no second copy)'}")
    if "peak_steps" in memory:
        peak = memory["peak_steps"]
        print(f"  CUDA: {_bytes(memory['allocated_after_load'])} allocated after loading; peak during the steps "
              f"{_bytes(peak)} = weights + {_bytes(peak - weights)} "
              f"({'less' if peak - weights < weights else 'MORE'} than one more copy of the base weights); "
              f"peak with the floor passes {_bytes(memory['peak_with_floor'])}")
    else:
        print(f"  CPU: peak RSS of the process {memory['peak_rss_mib']:.0f} MiB (Python, torch, the model)")
    summary = {"size": args.size, "device": args.device, "dtype": args.dtype, "torch": torch.__version__,
               "emorl_median": med, "floor_median": fl, "floor_ratio": floor_ratio, "memory": memory,
               "emorl_steps": rows, "floor_steps": floors}
    if args.device.startswith("cuda"):
        summary["gpu"] = torch.cuda.get_device_name()
    if trl_result is not None:
        trl_step = _median(trl_result["steps"])
        trl_floor = _median([f["total"] for f in trl_result["floors"]]) if trl_result["floors"] else float("nan")
        no_audio = med["step"] - med["prompt"]
        print()
        same = trl_result["prompt_tokens_trl"] == trl_result["prompt_tokens_emorl"]
        print(f"emorl vs TRL {trl_result['version']} GRPOTrainer: the same language model (weights copied into a text-only "
              f"Qwen2ForCausalLM for TRL), prompt tokens emorl {trl_result['prompt_tokens_emorl'][0]} / TRL "
              f"{trl_result['prompt_tokens_trl'][0]} ({'identical' if same else 'DIFFER'}), G {args.generations}, "
              f"beta {args.beta:g}, {args.new_tokens} new tokens forced in both, LoRA r {args.lora_r} in both; "
              f"medians of {len(trl_result['steps'])} steps after {args.warmup} warm-up")
        print(f"{'':<44}{'emorl s':>9}{'TRL s':>9}{'TRL/emorl':>10}")
        print(f"{'whole step':<44}{_fmt(med['step'])}{_fmt(trl_step)}{trl_step / med['step']:9.2f}x")
        print(f"{'  emorl without its audio prompt work':<44}{_fmt(no_audio)}{_fmt(trl_step)}{trl_step / no_audio:9.2f}x")
        if fl and trl_result["floors"]:
            tf = {k: _median([f[k] for f in trl_result["floors"]]) for k in ("prompt", "decode", "policy", "reference")}
            print(f"{'floor (plain calls, same tokens)':<44}{_fmt(fl['total'])}{_fmt(trl_floor)}{trl_floor / fl['total']:9.2f}x")
            for key, name in (("prompt", "prompt (audio tower; TRL: none)"), ("decode", "decoding"),
                              ("reference", "reference pass"), ("policy", "policy pass")):
                print(f"{'  floor: ' + name:<44}{_fmt(fl[key])}{_fmt(tf[key])}")
            print(f"{'step / floor':<44}{floor_ratio:9.2f}{trl_step / trl_floor:9.2f}")
        verdict = "met" if trl_step / med["step"] >= 1.25 else "NOT met"
        print(f"emorl is {trl_step / med['step']:.2f}x faster than TRL per step (target >= 1.25x: {verdict})")
        if "peak" in trl_result:
            print(f"  CUDA peak during TRL's steps {_bytes(trl_result['peak'])}")
        summary["trl"] = {k: v for k, v in trl_result.items()} | {"median_step": trl_step, "median_floor": trl_floor}
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["tiny", "7b"], default="tiny",
                        help="tiny: the zoo's tiny Qwen2-Audio; 7b: Qwen2-Audio-7B-Instruct's sizes (random weights)")
    parser.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    parser.add_argument("--dtype", default=None, help="float32 | bfloat16 (default: float32 tiny, bfloat16 7b)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 5 tiny, 3 7b)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps, not timed (default: 2 tiny, 1 7b)")
    parser.add_argument("--generations", type=int, default=6, help="G answers per prompt")
    parser.add_argument("--prompts", type=int, default=1, help="prompts (clips) per step")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens per answer (default: 64 tiny, 256 7b)")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--full-finetune", action="store_true", help="train every language-model weight (no LoRA)")
    parser.add_argument("--strategy", choices=["single", "fsdp"], default="single",
                        help="fsdp: the same step under FSDP2 and under DDP, 2 CPU processes each "
                             "(tools/bench_grpo_parallel.py), and their ratio")
    parser.add_argument("--micro-batch", type=int, default=None, help="answers per log-prob forward (default: G)")
    parser.add_argument("--no-gradient-checkpointing", dest="gradient_checkpointing", action="store_false")
    parser.add_argument("--no-floor", action="store_true", help="skip the floor measurement")
    parser.add_argument("--compare-trl", action="store_true", help="also run TRL's GRPOTrainer (needs TRL)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--verbose", action="store_true", help="print every step")
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    big = args.size == "7b"
    args.dtype = args.dtype or ("bfloat16" if big else "float32")
    args.steps = args.steps if args.steps is not None else (3 if big else 5)
    args.warmup = max(1, args.warmup if args.warmup is not None else (1 if big else 2))
    args.new_tokens = args.new_tokens or (256 if big else 64)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.strategy == "fsdp" and (args.device != "cpu" or args.compare_trl):
        parser.error("--strategy fsdp runs 2 CPU processes (--device cpu), without --compare-trl")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda but torch sees no CUDA device")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.compare_trl:
        try:
            import trl  # noqa: F401
        except ImportError:
            print(TRL_MISSING, file=sys.stderr)
            return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    import logging
    import warnings

    loggers = {name: logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "transformers", "peft")}
    levels = {name: logger.level for name, logger in loggers.items()}
    clock = Clock(args.device)
    try:
        for logger in loggers.values():
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), tempfile.TemporaryDirectory(prefix="emorl_bench_grpo_") as tmp:
            warnings.simplefilter("ignore")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            work = Path(tmp)
            folder = build_model_folder(args.size, work / "model")
            if args.strategy == "fsdp":
                from bench_grpo_parallel import compare_fsdp_with_ddp

                summary = compare_fsdp_with_ddp(args, folder, work)
                if args.json:
                    Path(args.json).write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
                return 0
            emorl = run_emorl(args, folder, work, clock)
            trl_result = run_trl(args, emorl, work, clock) if args.compare_trl else None
            summary = report(args, emorl, trl_result)
    finally:
        for name, logger in loggers.items():
            logger.setLevel(levels[name])
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training cases for the FSDP tests: one SFT or GRPO run on a fixed global batch, on one process or
under ``ModelParallelStrategy`` (2 CPU processes, gloo, float32), with what each rank measured.

    run_case({"kind": "grpo", "family": "qwen2-audio", "lora": True}, world_size=1)   # in the test process
    spawn_cases(cases, out_dir)                                                        # 2 processes

GRPO's answers are injected (:func:`injected_generate`: G answers per prompt drawn from a generator
seeded by the prompt's own token ids), so one process and two see the same rollouts; the answers'
lengths differ, and the ``answer_length`` reward (``tests.ddp_probe``) gives every group a spread.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import lightning as L
import numpy as np
import torch

import tests.ddp_probe  # noqa: F401  (registers the answer_length reward)
from tests.lalm_fixtures import tiny_model_dir

CLASSES = ["angry", "happy", "sad", "neutral"]
ITEMS = 8  # two global batches of 4: two optimiser steps, so clipping shows in AdamW's second step
GLOBAL_BATCH = 4
CLIP = 0.05  # below every step's gradient norm: clipping acts (a local norm per shard would clip otherwise)


def items() -> list[dict]:
    """Eight clips of one label: every SFT target has as many tokens (SFT's loss is a per-rank token mean)."""
    rng = np.random.default_rng(0)
    seconds = [0.6, 0.9, 0.7, 1.1, 0.8, 0.6, 1.0, 0.7]
    return [{"key": f"clip{i}", "label": 0, "wave": (0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32)}
            for i, s in enumerate(seconds[:ITEMS])]


def collate(rows: list[dict]) -> dict:
    lengths = torch.tensor([len(r["wave"]) for r in rows])
    wave = torch.zeros(len(rows), int(lengths.max()))
    for i, r in enumerate(rows):
        wave[i, : len(r["wave"])] = torch.from_numpy(r["wave"])
    return {"key": [r["key"] for r in rows], "label": torch.tensor([r["label"] for r in rows]), "wave": wave,
            "wave_lengths": lengths}


def injected_generate(backbone, prompt, max_new_tokens=6, num_return_sequences=1, **_):
    """G answers per prompt, drawn from a generator seeded by the prompt's token ids (the same
    answers whichever rank, batch or padding the prompt comes with)."""
    from emorl.lalm.generation import GenerationResult, postprocess

    g = int(num_return_sequences)
    eos = backbone.eos_token_ids[0]
    rows = []
    for ids, mask in zip(prompt.input_ids.cpu(), prompt.attention_mask.cpu()):
        seed = int((ids[mask.bool()] * torch.arange(1, int(mask.sum()) + 1)).sum()) % (2**31)
        generator = torch.Generator().manual_seed(seed)
        for _ in range(g):
            length = int(torch.randint(1, max_new_tokens, (1,), generator=generator))
            tokens = torch.randint(40, 200, (max_new_tokens,), generator=generator)
            tokens[length:] = eos
            rows.append(tokens)
    sequences = torch.stack(rows)
    texts, completion_ids, mask, truncated = postprocess(backbone, sequences, ())
    return GenerationResult(texts=texts, completion_ids=completion_ids, completion_mask=mask, truncated=truncated,
                            prompt_index=torch.arange(len(prompt)).repeat_interleave(g),
                            prompt_lengths=prompt.lengths.cpu(), prompt=prompt, num_return_sequences=g,
                            timings={"decode": 0.0, "answers": 0.0})


def _model(case: dict) -> str:
    return case.get("model") or str(tiny_model_dir(case["family"]))


def build_module(case: dict) -> L.LightningModule:
    torch.manual_seed(0)  # the same LoRA initialisation in every process
    common = {"class_names": CLASSES, "model": _model(case), "dtype": case.get("dtype", "float32"),
              "prompt_format": "ir", "lr": 1e-2, "gradient_checkpointing": case.get("checkpointing", False)}
    if case["lora"]:
        common["lora"] = {"r": 2, "alpha": 4, "dropout": 0.0}
    else:
        common["full_finetune"] = True
    if case["kind"] == "sft":
        from emorl.models.sft import SFTLALM

        return SFTLALM(**common)
    from emorl.models.grpo import GRPOLALM

    return GRPOLALM(**common, num_generations=3, max_new_tokens=6, beta=0.04, loss_type="dapo",
                    logprob_micro_batch=2, gradient_clip_val=CLIP,
                    rewards=[{"name": "answer_length", "weight": 1.0}])


class Record(L.Callback):
    """Per step: the keys this rank trained on, the logged loss, and (before each optimiser step)
    the bytes of parameters, gradients and optimiser states held by this rank."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.losses: list[float] = []
        self.bytes: list[dict] = []
        self.norms: list[float] = []
        self.reductions = [0]  # the fit's reduce-scatter counter
        self.reductions_before = 0
        self.step_reductions: list[int] = []  # reduce-scatters per training batch

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.keys += list(batch["key"])
        self.reductions_before = self.reductions[0]

    def on_before_optimizer_step(self, trainer, module, optimizer):
        from emorl.lalm.sharding import local_bytes

        self.bytes.append(local_bytes(module, optimizer))
        if trainer.world_size == 1:  # the global gradient norm (GRPO: after its clipping; SFT: before)
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            self.norms.append(float(torch.stack([g.norm() for g in grads]).norm()))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(trainer.callback_metrics["train/loss"]))
        self.step_reductions.append(self.reductions[0] - self.reductions_before)


def full_trainable(module) -> dict[str, list]:
    """Every trainable weight, whole (gathered from the shards), as nested lists."""
    out = {}
    for name, p in module.backbone.trainable_parameters():
        value = p.detach()
        if hasattr(value, "full_tensor"):
            value = value.full_tensor()
        out[name] = value.double().flatten().tolist()
    return out


def shard_report(module, rank: int, world_size: int) -> list[str]:
    """Parameters whose local shard is not ``torch.chunk``'s share of dim 0 for this rank."""
    wrong = []
    for name, p in module.named_parameters():
        if not hasattr(p, "to_local"):
            wrong.append(f"{name}: not sharded")
            continue
        chunks = torch.empty(p.shape[0]).chunk(world_size)
        expected = chunks[rank].shape[0] if rank < len(chunks) else 0
        if p.to_local().shape[0] != expected:
            wrong.append(f"{name}: local {tuple(p.to_local().shape)}, expected dim 0 {expected}")
    return wrong


def run_case(case: dict, world_size: int, order: list[str] | None = None) -> dict:
    """Two optimiser steps on the two global batches; what this rank saw and measured. ``order``
    (one process): the keys in the order to train on (the distributed sampler's global batches)."""
    import emorl.rl.rollout as rollout

    real_generate, rollout.generate = rollout.generate, injected_generate
    try:
        return _run_case(case, world_size, order)
    finally:
        rollout.generate = real_generate


def _run_case(case: dict, world_size: int, order: list[str] | None) -> dict:
    from lightning.pytorch.strategies import ModelParallelStrategy
    from torch.utils.data import DataLoader

    module = build_module(case)
    start = full_trainable(module) if world_size == 1 else {}
    record = Record()
    strategy = "auto"
    if world_size > 1:
        strategy = ModelParallelStrategy(data_parallel_size=world_size, tensor_parallel_size=1)
    trainer = L.Trainer(accelerator="cpu", devices=world_size, strategy=strategy, max_steps=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[record],
                        accumulate_grad_batches=1, gradient_clip_val=CLIP if case["kind"] == "sft" else None)
    data = items()
    if order is not None:
        data = [next(item for item in data if item["key"] == key) for key in order]
    loader = DataLoader(data, batch_size=GLOBAL_BATCH // world_size, collate_fn=collate, shuffle=False)
    from emorl.lalm.sharding import count_reduce_scatters, fsdp_modules

    with count_reduce_scatters() as record.reductions:
        trainer.fit(module, loader)
    trained_units = sum(any(f.sharded_param.requires_grad for g in m._get_fsdp_state()._fsdp_param_groups
                            for f in g.fsdp_params) for m in fsdp_modules(module.backbone.hf_model))
    rank = trainer.global_rank
    micro = 1
    if case["kind"] == "grpo":  # the objective: the logged mean over micro-batches times their number
        micro = -(-GLOBAL_BATCH // world_size * module.hparams.num_generations // module.hparams.logprob_micro_batch)
    return {"rank": rank, "keys": record.keys, "objective": [loss * micro for loss in record.losses],
            "bytes": record.bytes, "norms": record.norms,
            "reductions": record.step_reductions, "trained_units": trained_units, "weights": full_trainable(module), "start": start,
            "sharding": shard_report(module.backbone.hf_model, rank, world_size) if world_size > 1 else []}


def rollout_check(case: dict, rank: int, world_size: int) -> dict:
    """All-gathers during one real rollout of the sharded policy, and its answers next to those of
    the same model unsharded, both sampled from the same seed."""
    from torch.distributed.device_mesh import init_device_mesh

    from emorl.lalm import load_backbone
    from emorl.lalm.sharding import count_all_gathers, fsdp_modules, shard_model
    from emorl.rl.rewards import RewardContext, RewardSet
    from emorl.rl.rollout import RolloutOptions, sample_rollout
    from tests.lalm_fixtures import clips, messages

    path = _model(case)
    sharded = load_backbone(path, full_finetune=True)
    plain = load_backbone(path, full_finetune=True)
    mesh = init_device_mesh("cpu", (world_size,), mesh_dim_names=("data_parallel",))
    shard_model(sharded.hf_model, mesh, torch.float32, fp32_masters=True)
    units = [m for m in fsdp_modules(sharded.hf_model)
             if m._get_fsdp_state()._fsdp_param_groups and not getattr(m, "_emorl_skip_in_generation", False)]
    options = RolloutOptions(num_generations=2, max_new_tokens=8, min_new_tokens=8)
    rewards = RewardSet.from_config([{"name": "answer_length", "weight": 1.0}])
    context = RewardContext(classes=CLASSES)
    own_clips = clips(seconds=(0.5, 0.8), seed=rank)  # each rank its own prompts
    texts = {}
    for name, backbone in (("sharded", sharded), ("plain", plain)):
        torch.manual_seed(1234 + rank)
        with count_all_gathers() as gathers:
            result = sample_rollout(backbone, messages(2), own_clips, ["happy", "sad"], rewards, context, options)
        texts[name] = result.texts
        texts[f"{name}_gathers"] = gathers[0]
    return {"gathers": texts["sharded_gathers"], "units": len(units), "decode_steps": options.max_new_tokens,
            "texts": texts["sharded"], "plain_texts": texts["plain"]}


def judge_check(case: dict, rank: int, world_size: int) -> dict:
    """All-gathers during one judging call of a sharded judge, and its replies next to the same judge
    unsharded (greedy)."""
    from torch.distributed.device_mesh import init_device_mesh

    from emorl.lalm.sharding import count_all_gathers, fsdp_modules
    from emorl.rl.judge import Judge, judge_messages

    mesh = init_device_mesh("cpu", (world_size,), mesh_dim_names=("data_parallel",))
    answers = [f"<think>rank {rank} answer {i}: the voice is loud</think><answer>angry</answer>" for i in range(3)]
    rows = [{"transcript": "hello there", "prosody": {"caption": "loud and fast"}}] * 3
    out = {}
    options = {"dtype": "float32", "batch_size": 2, "max_new_tokens": 6}
    for name, judge in (("sharded", Judge(case["model"], **options).shard_over(mesh)),
                        ("plain", Judge(case["model"], **options))):
        judge._load()  # loaded (and sharded) on first use: before the counted call
        with count_all_gathers() as gathers:
            out[name] = judge.generate([judge_messages(a, r) for a, r in zip(answers, rows)])
        out[f"{name}_gathers"] = gathers[0]
        if name == "sharded":
            out["units"] = sum(bool(m._get_fsdp_state()._fsdp_param_groups) for m in fsdp_modules(judge.lm.model))
    return out


def _worker(rank: int, world_size: int, port: int, cases: list[dict], out_dir: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(world_size),
                       "RANK": str(rank), "LOCAL_RANK": str(rank), "NODE_RANK": "0", "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    results = []
    for case in cases:
        if case["kind"] == "rollout":
            results.append(rollout_check(case, rank, world_size))
        elif case["kind"] == "judge":
            results.append(judge_check(case, rank, world_size))
        else:
            results.append(run_case(case, world_size))
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    from emorl.lightning_cli import end_process_group

    end_process_group()  # a gloo group left to the interpreter's shutdown can abort the worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_cases(cases: list[dict], out_dir: Path, world_size: int = 2) -> list[list[dict]]:
    """Run ``cases`` in ``world_size`` spawned processes; each rank's results, by rank."""
    import torch.multiprocessing as mp

    out_dir.mkdir(parents=True, exist_ok=True)
    cases = [{**case, "model": case.get("model") or _model(case)} for case in cases]  # built here, not per rank
    mp.spawn(_worker, args=(world_size, free_port(), cases, str(out_dir)), nprocs=world_size, join=True)
    return [json.loads(Path(out_dir, f"rank{r}.json").read_text()) for r in range(world_size)]

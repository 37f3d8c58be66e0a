"""``tools/bench_grpo.py --strategy fsdp``: the same GRPO step under FSDP2 and under DDP, 2 CPU processes.

Both runs are ``bench_grpo.run_emorl`` (GRPOLALM in a Lightning ``Trainer``, the same tiny random
model, clips and settings) in 2 processes over gloo, spawned with ``torch.multiprocessing``: once
with ``strategy="ddp"``, once with ``ModelParallelStrategy(data_parallel_size=2,
tensor_parallel_size=1)`` (what ``emorl.strategy.FSDP2Strategy`` sets). Printed: rank 0's median
step split for each, the ratio FSDP / DDP per phase, and the bytes of parameters, gradients and
optimiser states rank 0 holds (local shards). No floor (``--no-floor`` implied).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

PHASES = (("generation", "generate"), ("  prompt: features + audio tower", "prompt"),
          ("  decoding (transformers generate)", "decode"), ("  answers: ids -> text", "answers"),
          ("rewards", "rewards"), ("reference pass", "reference"), ("policy pass (forward + backward)", "policy"),
          ("optimiser (clip + AdamW)", "optimizer"), ("other (Lightning, logging, data)", "other"),
          ("whole step", "step"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, args, folder: str, work: str, strategy: str, port: int, out: str) -> None:
    import torch
    from lightning.pytorch.strategies import ModelParallelStrategy

    import bench_grpo

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "NODE_RANK": "0"})
    torch.set_num_threads(1)
    args.processes = 2
    args.no_floor = True
    # GRPO under full fine-tuning never uses the projector in its loss (the rollout's prompt embeddings
    # are kept without grad): DDP must be told, FSDP needs nothing
    ddp = "ddp_find_unused_parameters_true" if args.full_finetune else "ddp"
    args.trainer_strategy = (ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
                             if strategy == "fsdp" else ddp)
    result = bench_grpo.run_emorl(args, Path(folder), Path(work) / f"{strategy}_rank{rank}", bench_grpo.Clock("cpu"))
    if rank == 0:
        Path(out).write_text(json.dumps({"rows": result["rows"], "memory": result["memory"]}, default=str))
    from emorl.lightning_cli import end_process_group

    end_process_group()  # a gloo group left to the interpreter's shutdown can abort the worker


def run_strategy(args, folder: Path, work: Path, strategy: str) -> dict:
    """Rank 0's rows and memory of ``--warmup + --steps`` steps under ``strategy`` (``ddp`` | ``fsdp``)."""
    import torch.multiprocessing as mp

    out = work / f"{strategy}.json"
    mp.spawn(_worker, args=(args, str(folder), str(work), strategy, _free_port(), str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


def compare_fsdp_with_ddp(args, folder: Path, work: Path) -> dict:
    """Run both, print the split side by side and the ratio; returns the figures."""
    from bench_grpo import _fmt, _median

    runs = {name: run_strategy(args, folder, work, name) for name in ("ddp", "fsdp")}
    medians = {name: {key: _median([row[key] for row in run["rows"]]) for _, key in PHASES}
               for name, run in runs.items()}
    mode = "full fine-tuning" if args.full_finetune else f"LoRA r {args.lora_r}"
    print(f"GRPO step, tiny Qwen2-Audio, 2 CPU processes (gloo), {args.dtype}, {mode}, G {args.generations}, "
          f"{args.prompts} prompt(s) per rank, {args.new_tokens} new tokens forced, beta {args.beta:g}; "
          f"rank 0's medians of {args.steps} steps after {args.warmup} warm-up")
    print()
    print(f"{'phase':<40}{'DDP s':>9}{'FSDP s':>9}{'FSDP/DDP':>10}")
    for name, key in PHASES:
        ddp, fsdp = medians["ddp"][key], medians["fsdp"][key]
        ratio = f"{fsdp / ddp:10.2f}" if ddp and ddp == ddp and ddp > 0 else " " * 9 + "-"
        print(f"{name:<40}{_fmt(ddp)}{_fmt(fsdp)}{ratio}")
    ratio = medians["fsdp"]["step"] / medians["ddp"]["step"]
    print(f"whole step FSDP / DDP: {ratio:.2f}")
    held = {name: run["memory"]["local"] for name, run in runs.items()}
    print("held by rank 0 (bytes: parameters + gradients + optimiser states, local shards): "
          + ", ".join(f"{name.upper()} {sum(v.values()):,}" for name, v in held.items())
          + f" (FSDP / DDP {sum(held['fsdp'].values()) / sum(held['ddp'].values()):.2f})")
    return {"medians": medians, "fsdp_over_ddp": ratio, "held": held, "steps": {k: v["rows"] for k, v in runs.items()}}

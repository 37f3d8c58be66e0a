"""``emorl plan --config CONFIG --devices N --gpu-memory GB [--nodes M]``: the memory table, the verdict.

Exit status 0 when it fits, 1 when it does not, 2 for a bad config or option (one line).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from emorl.plan.memory import ASSUMPTIONS, peak_of, phase_totals, phases_of, plan_terms
from emorl.plan.setting import AUDIO_TOKENS_PER_SECOND, CHARS_PER_TOKEN, Setting, read_setting
from emorl.plan.sizes import PlanError

GIB = 2 ** 30
#: what the CUDA context, NCCL and the caching allocator's slack take from a GPU: 1 GiB + 5 %
RESERVE_GIB, RESERVE_FRACTION = 1.0, 0.05
#: GPUs per node assumed when a plan needs more than one node
GPUS_PER_NODE = 8
#: the largest device count a remedy proposes (8 nodes of 8)
MAX_GPUS = 64


def add_parser(sub: argparse._SubParsersAction) -> None:
    plan = sub.add_parser("plan", help="memory per GPU of a training config: fits or not, and what would make it fit")
    plan.add_argument("--config", required=True, type=Path, help="an `emorl fit` config (GRPOLALM or SFTLALM)")
    plan.add_argument("--devices", default=None, help="GPUs per node (default: the config's trainer.devices)")
    plan.add_argument("--nodes", default=None, help="nodes (default: the config's trainer.num_nodes, else 1)")
    plan.add_argument("--gpu-memory", required=True, help="memory of one GPU in GB (read as GiB: an '80 GB' H100 has 80 GiB)")


def usable_bytes(gpu_memory_gib: float) -> int:
    return int((gpu_memory_gib * (1 - RESERVE_FRACTION) - RESERVE_GIB) * GIB)


def _gpu_memory(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not math.isfinite(number) or number <= RESERVE_GIB + 1:
        raise PlanError(f"--gpu-memory must be a GPU's memory in GB (e.g. 48 or 80), not {value!r}")
    return number


def _gib(value: int) -> str:
    return f"{value / GIB:.2f}"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    cell = lambda text, i: text.rjust(widths[i]) if i in right else text.ljust(widths[i])  # noqa: E731
    return ["  ".join(cell(text, i) for i, text in enumerate(row)).rstrip() for row in rows]


def describe(s: Setting) -> list[str]:
    """The setting in words: model, what is trained, the GRPO shape, the strategy."""
    a, t = s.arch, s.arch.text
    trained = "full fine-tuning" if s.full_finetune else f"LoRA r {s.lora_r}" if s.lora_r else "nothing (frozen)"
    lines = [
        f"model {a.name}: {a.total / 1e9:.2f} B parameters; decoder {t.layers} layers x {t.hidden}, {t.heads} heads, "
        f"{t.kv_heads} KV heads x {t.head_dim}, MLP {t.intermediate}, vocabulary {t.vocab}"
        + (f"; audio encoder {a.audio.layers} layers x {a.audio.width}" if a.audio else ""),
        f"training: {s.module.upper()}, {trained}, {s.prompts_per_device} prompt(s) per GPU"
        + (f", G {s.num_generations}, beta {s.beta:g}, {s.micro_batch} answers per log-prob pass" if s.module == "grpo" else "")
        + f", {s.max_new_tokens} new tokens, evaluation {s.eval_batch_size} x {s.eval_max_new_tokens} new tokens",
        f"prompt: {s.prompt_tokens} tokens = {s.audio_tokens} audio ({AUDIO_TOKENS_PER_SECOND} a second of "
        f"data.max_seconds) + ~{s.prompt_tokens - s.audio_tokens} text (estimated from the prompt format at "
        f"~{CHARS_PER_TOKEN:g} characters a token)",
        f"strategy: {s.strategy} -> " + (f"sharded over {s.world} GPUs ({s.devices} devices x {s.nodes} node{'s' * (s.nodes > 1)})"
                                        if s.sharded else f"replicated on each of {s.world} GPU(s)"),
    ]
    if s.judge is not None:
        lines.append(f"PTR judge: {s.judge.arch.name} ({s.judge.arch.total / 1e9:.2f} B), batch {s.judge.batch_size}")
    return lines


def report(s: Setting, gpu_memory_gib: float) -> tuple[list[str], bool]:
    """The printed plan and whether it fits."""
    terms, phases = plan_terms(s), phases_of(s)
    totals = phase_totals(terms, phases)
    peak_phase = max(totals, key=totals.get)
    usable = usable_bytes(gpu_memory_gib)
    lines = ["emorl plan", *describe(s), "", "assumptions:"]
    lines += [f"  - {text}" for text in ASSUMPTIONS]
    rows = [["per GPU", "GiB", "held during", "note"]]
    for term in terms:
        held = "every phase" if set(term.phases) >= set(phases) else ", ".join(p for p in phases if p in term.phases)
        rows.append([term.name, _gib(term.bytes), held, term.note])
    lines += ["", *_table(rows, right={1})]
    lines += ["", *_table([["phase", *phases], ["GiB", *(_gib(totals[p]) for p in phases)]], right=set(range(1, 99)))]
    lines += ["", f"total (peak, {peak_phase}): {_gib(totals[peak_phase])} GiB per GPU; usable {_gib(usable)} GiB of "
                  f"{gpu_memory_gib:g} GiB (reserve {RESERVE_GIB:g} GiB + {RESERVE_FRACTION:.0%})"]
    fits = totals[peak_phase] <= usable
    if fits:
        return lines + ["fits"], True
    lines.append(f"does not fit: {_gib(totals[peak_phase] - usable)} GiB over, at the {peak_phase} phase")
    remedies = remedies_for(s, usable)
    lines += [f"  would fit: {text}" for text in remedies] or ["  no single switch makes it fit (see the table)"]
    return lines, False


def _fits(s: Setting, usable: int) -> bool:
    return peak_of(s)[1] <= usable


def _world_flags(world: int) -> str:
    if world <= GPUS_PER_NODE:
        return f"--devices {world}"
    return f"--nodes {world // GPUS_PER_NODE} --devices {GPUS_PER_NODE}"


def _smallest_world(s: Setting, usable: int) -> int | None:
    worlds = list(range(1, GPUS_PER_NODE + 1)) + list(range(2 * GPUS_PER_NODE, MAX_GPUS + 1, GPUS_PER_NODE))
    for world in worlds:
        nodes = max(1, world // GPUS_PER_NODE)
        if _fits(s.with_(devices=world // nodes, nodes=nodes, sharded=True), usable):
            return world
    return None


def remedies_for(s: Setting, usable: int) -> list[str]:
    """Each switch that alone makes ``s`` fit, with its peak: more devices (sharded), LoRA, beta 0,
    shorter answers, a smaller evaluation batch; else LoRA with more devices."""
    found = []
    # sharding pays where the 16 bytes a trained parameter dominate; under LoRA the whole model is
    # unsharded for generation anyway
    world = _smallest_world(s, usable) if s.full_finetune or s.sharded else None
    if world is not None and (world > s.world or not s.sharded):
        switch = "" if s.sharded else " with trainer.strategy emorl.strategy.FSDP2Strategy"
        found.append(f"{world} GPUs{switch} ({_world_flags(world)}): smallest device count that fits")
    if s.full_finetune:
        lora = s.with_(full_finetune=False, lora_r=8, sharded=s.sharded and s.world > 1)
        if _fits(lora, usable):
            where = "" if lora.sharded else ", strategy auto (nothing to shard on one GPU)" if s.sharded else ""
            found.append(f"LoRA r 8 (full_finetune: false, lora: {{r: 8}}{where}): peak {_gib(peak_of(lora)[1])} GiB")
    if s.module == "grpo" and s.beta > 0 and _fits(s.with_(beta=0.0), usable):
        found.append(f"beta 0 (no reference): peak {_gib(peak_of(s.with_(beta=0.0))[1])} GiB")
    tokens = s.max_new_tokens // 2
    while tokens >= 16:
        shorter = s.with_(max_new_tokens=tokens, eval_max_new_tokens=min(tokens, s.eval_max_new_tokens))
        if _fits(shorter, usable):
            found.append(f"shorter answers: max_new_tokens (and eval_max_new_tokens) {tokens}: peak {_gib(peak_of(shorter)[1])} GiB")
            break
        tokens //= 2
    if peak_of(s)[0] == "evaluation":
        for batch in range(s.eval_batch_size - 1, 0, -1):
            if _fits(s.with_(eval_batch_size=batch), usable):
                found.append(f"data.eval_batch_size {batch}")
                break
    if not found and s.full_finetune:  # two switches together: LoRA and shorter answers
        lora = s.with_(full_finetune=False, lora_r=8, sharded=s.sharded and s.world > 1)
        tokens = s.max_new_tokens // 2
        while tokens >= 16 and not found:
            both = lora.with_(max_new_tokens=tokens, eval_max_new_tokens=min(tokens, s.eval_max_new_tokens))
            if _fits(both, usable):
                found.append(f"LoRA r 8 and max_new_tokens {tokens}: peak {_gib(peak_of(both)[1])} GiB")
            tokens //= 2
    return found


def run_plan(args: argparse.Namespace) -> int:
    """The body of ``emorl plan``: print the plan; 0 if it fits, 1 if not (bad input: PlanError, 2)."""
    gpu_memory = _gpu_memory(args.gpu_memory)
    setting = read_setting(args.config, devices=args.devices, nodes=args.nodes)
    lines, fits = report(setting, gpu_memory)
    print("\n".join(lines))
    return 0 if fits else 1

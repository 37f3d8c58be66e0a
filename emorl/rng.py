"""Random-number-generator states for exact resumes.

Lightning checkpoints hold the weights, optimisers, schedulers and loop counters, not the RNGs.
GRPO samples its answers (and LoRA applies dropout) from the global torch RNG, so a resumed run
reproduces the interrupted one only when the RNGs are put back too. Under DDP every rank draws
its own stream: the checkpoint keeps one state per rank.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.distributed as dist


def capture_rng_states() -> dict:
    """This process's Python, NumPy, torch CPU and (when present) CUDA RNG states.

    Only plain types and tensors, so that checkpoints still load with ``torch.load(weights_only=True)``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    """Put back what :func:`capture_rng_states` returned."""
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def capture_all_ranks() -> list[dict]:
    """Every rank's states, in rank order (a collective under DDP: call it on every rank)."""
    mine = capture_rng_states()
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [mine]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    return gathered


def restore_this_rank(per_rank: list[dict]) -> bool:
    """Restore this rank's entry; ``False`` (nothing restored) when the world size changed."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if len(per_rank) != world:
        return False
    restore_rng_states(per_rank[rank])
    return True

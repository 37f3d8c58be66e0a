"""Sharded checkpoints (``torch.distributed.checkpoint``) of :class:`emorl.strategy.FSDP2Strategy`.

A sharded checkpoint is a folder named like a checkpoint file (``checkpoints/last.ckpt/``), as
Lightning's ``ModelParallelStrategy`` writes it: one ``__R_0.distcp`` file per rank holding that
rank's shards of ``state_dict`` (the **trainable** weights only) and ``optimizer_0`` (their AdamW
states), ``.metadata`` (DCP's index) and ``meta.pt`` (everything else: loops, schedulers, callbacks,
hyper-parameters, ``emorl_trainable_keys``, GRPO's RNG states; written last, by rank 0).

- :func:`load_sharded` (the strategy's ``load_checkpoint``): loads into the sharded module and its
  optimisers only the weights the folder holds (Lightning's own loader asks for every weight of the
  module, frozen ones included, and fails on a trainable-weights checkpoint);
- :func:`consolidate` (``emorl checkpoint consolidate``): the folder -> the single trainable-weights
  ``.ckpt`` file that ``emorl test --ckpt_path``, ``emorl export`` and ``init_checkpoint`` read on one
  device. It reads only the weights (not the optimiser states, twice their size) in one process,
  with no process group: host memory = the trainable weights once (fp32: 4 bytes per weight).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from emorl.errors import EmorlError

#: the folder's file of everything but tensors (Lightning's ``_METADATA_FILENAME``)
METADATA_FILENAME = "meta.pt"

#: the prefix of the weights' keys in the folder (the optimisers' are ``optimizer_N.``)
WEIGHTS_PREFIX = "state_dict."

#: what a consolidated file leaves out: it is for evaluation, export and ``init_checkpoint``, not a
#: resume (resume from the folder): without optimiser states Lightning says so in one line
RESUME_ONLY_KEYS = ("optimizer_states", "lr_schedulers")


def saved_tensor_keys(path: str | Path) -> set[str]:
    """The flattened keys (``state_dict.<name>``, ``optimizer_0.state.<name>.exp_avg``, ...) a
    sharded checkpoint folder holds, read from its DCP index."""
    from torch.distributed.checkpoint import FileSystemReader

    return set(FileSystemReader(str(path)).read_metadata().state_dict_metadata)


def saved_weight_names(path: str | Path) -> set[str]:
    """The module weights a sharded checkpoint folder holds (names as in ``module.state_dict()``)."""
    return {key[len(WEIGHTS_PREFIX):] for key in saved_tensor_keys(path) if key.startswith(WEIGHTS_PREFIX)}


def optimizer_state_names(stored: set[str], key: str = "optimizer_0") -> set[str]:
    """The weights that have optimiser state in a folder's keys (``optimizer_0.state.<name>.exp_avg``)."""
    prefix = f"{key}.state."
    return {k[len(prefix):].rsplit(".", 1)[0] for k in stored if k.startswith(prefix)}


def load_sharded(path: Path, model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                 strict: bool = True, weights_only: bool | None = None) -> dict[str, Any]:
    """Load a sharded checkpoint folder into a sharded ``model`` and its ``optimizers`` (every rank).

    Only the weights the folder holds are asked for; with ``strict`` a weight of the model missing
    from it is an error. Returns ``meta.pt``'s dict with ``state_dict`` set to the weights loaded
    (the module's ``on_load_checkpoint`` checks their names), as Lightning's loaders return it.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    stored = saved_tensor_keys(path)
    saved = {key[len(WEIGHTS_PREFIX):] for key in stored if key.startswith(WEIGHTS_PREFIX)}
    model_state = get_model_state_dict(model)
    missing = sorted(set(model_state) - saved)
    if strict and missing:
        raise EmorlError(f"checkpoint {path}: {len(missing)} weight(s) of the model are not in it, e.g. "
                         f"{missing[:3]}; it was saved by another model")
    wanted = {name: value for name, value in model_state.items() if name in saved}
    loaded = {"state_dict": wanted}
    dcp.load(loaded, checkpoint_id=path)
    set_model_state_dict(model, loaded["state_dict"], options=StateDictOptions(strict=False))
    for index, optimizer in enumerate(optimizers):  # one at a time, as Lightning does
        key = f"optimizer_{index}"
        state = get_optimizer_state_dict(model, optimizer)
        with_state = optimizer_state_names(stored, key)
        # a trainable weight that never had a gradient before the save (GRPO's projector: the prompt
        # embeddings are computed once, without gradient) has no AdamW state: ask for none, and load
        # none (strict=False), so that its first step starts AdamW from zero as in the saved run
        state["state"] = {name: value for name, value in state["state"].items() if name in with_state}
        loaded_optimizer = {key: state}
        dcp.load(loaded_optimizer, checkpoint_id=path)
        set_optimizer_state_dict(model, optimizer, optim_state_dict=loaded_optimizer[key],
                                 options=StateDictOptions(cpu_offload=True, strict=False))
    metadata = torch.load(path / METADATA_FILENAME, map_location="cpu", weights_only=weights_only)
    metadata["state_dict"] = loaded["state_dict"]
    return metadata


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The full (unsharded) weights of a sharded checkpoint folder, read in this process alone
    (no process group), as CPU tensors of their saved dtype; the optimiser states are not read."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    keys = {key for key in saved_tensor_keys(path) if key.startswith(WEIGHTS_PREFIX)}
    state: dict[str, Any] = {}
    if keys:
        _load_state_dict(state, storage_reader=FileSystemReader(str(path)),
                         planner=_EmptyStateDictLoadPlanner(keys=keys), no_dist=True)
    return dict(state.get("state_dict", {}))


def consolidate(folder: str | Path, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write the single trainable-weights checkpoint file of a sharded checkpoint ``folder`` to ``out``.

    The file is a Lightning checkpoint as one device writes it (``state_dict`` = the full trainable
    weights, ``hyper_parameters``, ``emorl_trainable_keys``, epoch, step, ...) without the
    optimiser and scheduler states. Returns it. :class:`~emorl.errors.EmorlError` for a folder that
    is not a sharded checkpoint or an ``out`` that exists (unless ``overwrite``).
    """
    folder, out = Path(folder), Path(out)
    if folder.is_file():
        raise EmorlError(f"{folder} is already a single checkpoint file: emorl test --ckpt_path and "
                         "init_checkpoint read it as it is")
    if not folder.is_dir():
        raise EmorlError(f"{folder}: no such checkpoint folder, give a run's checkpoints/<name>.ckpt folder")
    if not (folder / METADATA_FILENAME).is_file() or not (folder / ".metadata").is_file():
        raise EmorlError(f"{folder}: not a sharded checkpoint (no {METADATA_FILENAME} / .metadata: an "
                         "interrupted save?), give a run's checkpoints/<name>.ckpt folder")
    if out.exists() and not overwrite:
        raise EmorlError(f"--out {out} exists, remove it or pass --overwrite")
    if out.resolve() == folder.resolve() or folder.resolve() in out.resolve().parents:
        raise EmorlError(f"--out {out}: write the file outside the checkpoint folder")
    checkpoint = torch.load(folder / METADATA_FILENAME, map_location="cpu", weights_only=True)
    for key in RESUME_ONLY_KEYS:
        checkpoint.pop(key, None)
    checkpoint["state_dict"] = read_weights(folder)
    checkpoint["emorl_consolidated_from"] = str(folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, out)
    return checkpoint


def main_consolidate(folder: Path, out: Path, overwrite: bool = False) -> int:
    """``emorl checkpoint consolidate FOLDER --out FILE``: one summary line, status 0."""
    checkpoint = consolidate(folder, out, overwrite=overwrite)
    weights = checkpoint["state_dict"].values()
    count = sum(t.numel() for t in weights)
    size = sum(t.numel() * t.element_size() for t in weights)
    print(f"emorl checkpoint consolidate: {out}: {len(checkpoint['state_dict'])} trained tensor(s), {count:,} "
          f"weights ({size / 2**20:.1f} MiB), step {checkpoint.get('global_step', '?')}; read it with "
          f"emorl test --ckpt_path {out} (or model.init_args.init_checkpoint)")
    return 0

"""``emorl.strategy.FSDP2Strategy``: Lightning's ``ModelParallelStrategy`` with emorl's defaults.

Lightning's ``ModelParallelStrategy`` defaults to ``data_parallel_size = num_nodes`` and
``tensor_parallel_size = devices``: on one node of 8 GPUs that is 1 x 8, a tensor-parallel mesh that
emorl's modules do not use (they shard with ``fully_shard`` over the data-parallel mesh), so nothing
would be sharded and every rank would get the same prompts. :class:`FSDP2Strategy` defaults to
data-parallel = the world size (``num_nodes x devices``) and tensor-parallel = 1: FSDP2 over every
rank, each rank its own share of the batches. Explicit sizes are still accepted; sizes whose product
is not the world size are a one-line :class:`~emorl.errors.EmorlError`.

Checkpoints (``docs/scale.md``, "Checkpoints"): a sharded ``torch.distributed.checkpoint`` folder
named like the file it replaces (``last.ckpt/``: one ``.distcp`` file per rank plus ``meta.pt``, the
loops', schedulers' and callbacks' state). It holds the **trainable** weights only (emorl's
checkpoints always have: the frozen base comes from the base model), their AdamW states and the
rest of Lightning's state; a resume on the same world size is exact. ``emorl checkpoint
consolidate`` turns the folder into the single trainable-weights file that one device reads
(:mod:`emorl.models.sharded_checkpoints`).

Config::

    trainer:
      strategy: {class_path: emorl.strategy.FSDP2Strategy}
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Optional, Union

from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.constants import default_pg_timeout

from emorl.errors import EmorlError

#: the file of Lightning's sharded checkpoints that holds everything but tensors (loops, schedulers, ...)
METADATA_FILENAME = "meta.pt"

Size = Union[Literal["auto"], int]


def resolve_mesh_sizes(data_parallel: Size, tensor_parallel: Size, world_size: int) -> tuple[int, int]:
    """``(data_parallel, tensor_parallel)`` for ``world_size`` ranks: tensor-parallel ``"auto"`` is 1,
    data-parallel ``"auto"`` is what is left (``world_size // tensor_parallel``); an
    :class:`~emorl.errors.EmorlError` when the product is not the world size."""
    for name, value in (("data_parallel_size", data_parallel), ("tensor_parallel_size", tensor_parallel)):
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise EmorlError(f"FSDP2Strategy: {name} {value!r} is not a positive whole number or 'auto'")
    tensor = 1 if tensor_parallel == "auto" else int(tensor_parallel)
    data = world_size // tensor if data_parallel == "auto" else int(data_parallel)
    if data * tensor != world_size:
        raise EmorlError(f"FSDP2Strategy: data_parallel_size {data} x tensor_parallel_size {tensor} = "
                         f"{data * tensor}, not the world size {world_size} (trainer.num_nodes x trainer.devices); "
                         "leave them out (data-parallel = the world size) or make their product the world size")
    return data, tensor


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 (``fully_shard``) over every rank: data-parallel = world size, tensor-parallel = 1.

    Args:
        data_parallel_size: ranks in a data-parallel group; ``"auto"`` (default): the world size
            divided by ``tensor_parallel_size``.
        tensor_parallel_size: ranks in a tensor-parallel group; ``"auto"`` or 1 (default): none.
        save_distributed_checkpoint: True (default): each rank writes its shards (a checkpoint
            folder); False: the full trainable weights and optimiser states are gathered on rank 0
            into one file (only for models that fit one host's memory twice over).
        process_group_backend / timeout: as Lightning's (default backend: nccl on GPU, gloo on CPU).
    """

    def __init__(self, data_parallel_size: Size = "auto", tensor_parallel_size: Size = 1,
                 save_distributed_checkpoint: bool = True, process_group_backend: Optional[str] = None,
                 timeout: Optional[timedelta] = default_pg_timeout) -> None:
        resolve_mesh_sizes(data_parallel_size, tensor_parallel_size, _any_world(data_parallel_size, tensor_parallel_size))
        super().__init__(data_parallel_size=data_parallel_size, tensor_parallel_size=tensor_parallel_size,
                         save_distributed_checkpoint=save_distributed_checkpoint,
                         process_group_backend=process_group_backend, timeout=timeout)
        self._requested_sizes = (data_parallel_size, tensor_parallel_size)

    def setup_environment(self) -> None:
        """Resolve the mesh sizes for this run's world (``num_nodes x devices``) before Lightning builds the mesh."""
        world_size = self.num_nodes * self.num_processes
        self._data_parallel_size, self._tensor_parallel_size = resolve_mesh_sizes(*self._requested_sizes, world_size)
        super().setup_environment()

    # -- checkpoints: trainable weights only --------------------------------------------------------
    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The module's state without its frozen parameters (emorl's modules keep only the trained
        weights: :func:`emorl.models.checkpoints.keep_trainable_weights`), so the frozen base is never
        copied to host memory for a checkpoint. Sharded (each rank its shards) unless
        ``save_distributed_checkpoint=False``."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=not self._save_distributed_checkpoint, cpu_offload=True,
                                   ignore_frozen_params=True)
        return get_model_state_dict(self.model, options=options)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: Optional[bool] = None) -> dict[str, Any]:
        """Load a sharded checkpoint folder: the weights it holds (the trainable ones), the optimiser
        states, and the rest from ``meta.pt``. The returned dict's ``state_dict`` names the weights
        loaded (the module's ``on_load_checkpoint`` checks them). A single file goes to Lightning."""
        path = Path(self.broadcast(checkpoint_path))
        if not is_sharded_checkpoint(path):
            return super().load_checkpoint(path, weights_only=weights_only)
        from emorl.models.sharded_checkpoints import load_sharded

        return load_sharded(path, self.model, [getattr(o, "_optimizer", o) for o in self.optimizers],
                            strict=self.lightning_module.strict_loading, weights_only=weights_only)


def is_sharded_checkpoint(path: str | Path) -> bool:
    """A folder written by a sharded save (it has ``meta.pt``, written last, by rank 0)."""
    return Path(path).is_dir() and (Path(path) / METADATA_FILENAME).is_file()


def _any_world(data_parallel: Size, tensor_parallel: Size) -> int:
    """A world size the requested sizes fit (to check their form at construction; the real world
    size is known in :meth:`FSDP2Strategy.setup_environment`)."""
    data = 1 if data_parallel == "auto" or not isinstance(data_parallel, int) else max(data_parallel, 1)
    tensor = 1 if tensor_parallel == "auto" or not isinstance(tensor_parallel, int) else max(tensor_parallel, 1)
    return data * tensor


__all__ = ["FSDP2Strategy", "is_sharded_checkpoint", "resolve_mesh_sizes", "METADATA_FILENAME"]

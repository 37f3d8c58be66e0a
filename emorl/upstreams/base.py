"""One interface for frozen speech encoders ("upstreams", the s3prl word).

An :class:`Upstream` takes a batch of zero-padded 16 kHz waveforms and their lengths and returns
an :class:`UpstreamOutput`: every hidden state (the transformer's input, then one per layer, the
last being the model's final output) and the number of valid frames of each clip. Upstreams are
frozen: always in eval mode, no gradients, whatever ``.train()`` is called with.

``identity`` is a short string that changes whenever the model or its weights change; the feature
cache (:mod:`emorl.upstreams.cache`) keys its folders on it. Backends compute it without loading
the weights where they can (:func:`emorl.upstreams.hf.hf_identity`); :func:`state_dict_digest`
is there for upstreams that only exist in memory.

Layer selection (:func:`select_layer`), used by the cache and the probe:

- ``"last"``: the final hidden state, ``(B, T', D)`` (what EmoBox trains its probe on);
- an ``int`` ``i``: ``hidden_states[i]`` (0 = the transformer's input, ``num_layers`` = the last;
  negative indices count from the end), ``(B, T', D)``;
- ``"all"``: every hidden state stacked, ``(B, num_layers + 1, T', D)`` (for a learned weighted sum).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence, Union

import torch
from torch import Tensor, nn

#: ``"last"``, ``"all"`` or a hidden-state index.
LayerSelection = Union[Literal["last", "all"], int]
#: How a batch runs through an encoder: ``padded`` (one forward), ``per_clip`` (each clip alone),
#: ``auto`` (the backend decides; padded only where padding provably changes nothing).
Batching = Literal["auto", "padded", "per_clip"]
#: Compute dtypes an upstream may run in (features are always returned as float32).
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: Bytes read from each end of a weight file for an identity hash.
SAMPLE_BYTES = 64 * 1024


def check_options(dtype: str, batching: str) -> None:
    """A clear error for a compute dtype or a batching mode that no backend knows."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    if batching not in ("auto", "padded", "per_clip"):
        raise ValueError(f"batching must be auto, padded or per_clip, not {batching!r}")


def digest_file(digest, file: Path, label: str | None = None) -> None:
    """Feed a weight file's ``label`` (default: its name), size, mtime and first / last 64 KiB
    (the whole file when small) into ``digest``: changes when the file is replaced or re-saved,
    without reading gigabytes."""
    stat = file.stat()
    digest.update(f"{label or file.name}|{stat.st_size}|{stat.st_mtime_ns}|".encode())
    with file.open("rb") as handle:
        digest.update(handle.read(SAMPLE_BYTES))
        if stat.st_size > 2 * SAMPLE_BYTES:
            handle.seek(-SAMPLE_BYTES, os.SEEK_END)
            digest.update(handle.read(SAMPLE_BYTES))


@dataclass
class UpstreamOutput:
    """What an upstream returns.

    Attributes:
        hidden_states: ``num_layers + 1`` tensors of shape ``(B, T', D)``; index 0 is the input of
            the first transformer layer, the last one is the model's final output. Frames at and
            beyond a clip's length are padding (their values are unspecified).
        lengths: ``(B,)`` long, the number of valid frames of each clip.
    """

    hidden_states: list[Tensor]
    lengths: Tensor

    def select(self, layer: LayerSelection = "last") -> Tensor:
        return select_layer(self.hidden_states, layer)


class Upstream(nn.Module):
    """Base class of the frozen encoders.

    Subclasses set ``name``, ``num_layers`` (transformer layers; ``hidden_states`` holds
    ``num_layers + 1`` tensors), ``hidden_dim``, ``frame_rate`` (frames per second of the
    output, 50 for every model of the zoo), ``sample_rate`` (of the input waveform, 16 kHz) and
    ``identity``, and implement :meth:`forward`. Call :meth:`freeze` at the end of ``__init__``.
    """

    name: str = "upstream"
    num_layers: int
    hidden_dim: int
    frame_rate: float = 50.0
    sample_rate: int = 16_000
    identity: str

    def forward(self, wave: Tensor, wave_lengths: Tensor) -> UpstreamOutput:  # pragma: no cover
        """``wave`` (B, T) float zero-padded at ``sample_rate``, ``wave_lengths`` (B,) -> output."""
        raise NotImplementedError

    @property
    def num_hidden_states(self) -> int:
        return self.num_layers + 1

    def freeze(self) -> "Upstream":
        """Eval mode and no gradients, for good."""
        self.requires_grad_(False)
        super().train(False)
        return self

    def train(self, mode: bool = True) -> "Upstream":
        """Upstreams stay in eval mode (dropout / layer drop off) even under ``model.train()``."""
        return super().train(False)

    def _run(self, clips: Sequence) -> tuple[list[Tensor], object]:  # pragma: no cover
        """One forward over ``clips`` padded together: hidden states ``(B, T', D)`` and anything else."""
        raise NotImplementedError

    def run_clips(self, clips: Sequence, lengths: Tensor) -> UpstreamOutput:
        """Hidden states of ``clips`` (valid frames ``lengths``): one padded forward under
        ``batching="padded"`` (or for a single clip), else one forward per clip, zero-padded after."""
        max_frames = max(int(lengths.max()), 1)
        if self.batching == "padded" or len(clips) == 1:
            hidden = [h[:, :max_frames].float() for h in self._run(clips)[0]]
        else:
            per_clip = [self._run([clip])[0] for clip in clips]
            hidden = []
            for layer in range(self.num_layers + 1):
                batch = per_clip[0][layer].new_zeros(len(clips), max_frames, self.hidden_dim, dtype=torch.float32)
                for i, states in enumerate(per_clip):
                    n = min(int(lengths[i]), states[layer].shape[1])
                    batch[i, :n] = states[layer][0, :n].float()
                hidden.append(batch)
        return UpstreamOutput(hidden_states=hidden, lengths=lengths.to(hidden[0].device))

    def extract(self, wave: Tensor, wave_lengths: Tensor, layer: LayerSelection = "last") -> tuple[Tensor, Tensor]:
        """The selected layer(s) and the valid frame counts (see the module docstring)."""
        output = self(wave, wave_lengths)
        return output.select(layer), output.lengths

    def layer_index(self, layer: LayerSelection) -> int | None:
        """The hidden-state index a selection stands for (``None`` for ``"all"``); checks range."""
        if layer == "all":
            return None
        if layer == "last":
            return self.num_layers
        index = int(layer)
        if not -self.num_hidden_states <= index < self.num_hidden_states:
            raise ValueError(
                f"layer {index} out of range for {self.name}: it has {self.num_hidden_states} hidden states "
                f"(0 = transformer input .. {self.num_layers} = last layer)"
            )
        return index % self.num_hidden_states


def select_layer(hidden_states: Sequence[Tensor], layer: LayerSelection = "last") -> Tensor:
    """``"last"`` / index -> ``(B, T', D)``; ``"all"`` -> ``(B, L, T', D)``."""
    if layer == "all":
        return torch.stack(list(hidden_states), dim=1)
    if layer == "last":
        return hidden_states[-1]
    if isinstance(layer, str):
        raise ValueError(f"layer must be 'last', 'all' or an integer, not {layer!r}")
    return hidden_states[int(layer)]


def lengths_to_mask(lengths: Tensor, max_len: int | None = None) -> Tensor:
    """``(B,)`` lengths -> ``(B, max_len)`` bool mask, True on valid positions."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, lengths: Tensor, time_dim: int = 1) -> Tensor:
    """Mean over the valid frames of ``x`` along ``time_dim`` (frames at or past ``lengths`` ignored).

    ``x`` is ``(B, T, ...)`` with the default ``time_dim=1``, e.g. ``(B, T, D)`` -> ``(B, D)``.
    A clip of length 0 gives zeros (instead of NaN).
    """
    mask = lengths_to_mask(lengths.to(x.device), x.shape[time_dim]).to(x.dtype)  # (B, T)
    shape = [mask.shape[0]] + [1] * (x.dim() - 1)
    shape[time_dim] = mask.shape[1]
    mask = mask.view(shape)
    total = (x * mask).sum(time_dim)
    count = mask.sum(time_dim).clamp_min(1.0)
    return total / count


def state_dict_digest(module: nn.Module, length: int = 16) -> str:
    """A content hash of a module's parameters and buffers (for upstreams that live in memory only)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:length]

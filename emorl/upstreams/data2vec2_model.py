"""The data2vec 2.0 audio encoder (emotion2vec uses the same network), written from the paper's design.

Only what feature extraction needs is here (no masking, no EMA teacher, no decoder). The
network, for a waveform already normalised over the clip:

1. a convolutional feature encoder (7 convolutions, stride 320 in all: 50 frames per second at
   16 kHz) with a per-frame LayerNorm after each convolution (``extractor_mode: layer_norm``; the
   ``default`` mode has one GroupNorm after the first convolution instead), then GELU;
2. LayerNorm + Linear to the model width ``D``;
3. a relative positional encoder: ``conv_pos_depth`` grouped convolutions of width
   ``max(3, conv_pos_width // conv_pos_depth)``, each followed by a non-affine LayerNorm and GELU,
   added to its input;
4. ``num_extra_tokens`` learned tokens prepended (emotion2vec: 10; they are dropped at the end);
5. ``prenet_depth`` transformer blocks (the modality "context encoder", after a LayerNorm in the
   post-LN layout) and ``depth`` shared blocks, every one with an ALiBi attention bias (symmetric,
   ``-slope_h * |i - j|``, times a learned non-negative per-head scale; zero for extra tokens);
6. blocks are post-LN (``layer_norm_first: false``, every released audio model):
   ``x = LN1(x + Attn(x)); x = LN2(x + MLP(x))``.

:class:`Data2Vec2Encoder` keeps the ``prenet_depth + depth`` blocks in one list, so the hidden
states are: the input of the first block, then each block's output (extra tokens removed); the
last one is the model's final output (what the official ``extract_features(...)["x"]`` returns).

Padding: frame ``t`` of the feature encoder only reads samples of its own window and every later
step is per frame, except the positional convolutions and attention. :meth:`Data2Vec2Encoder.forward`
zeroes the padded frames before each positional convolution (so a clip sees zeros past its end,
exactly as when it runs alone) and masks padded keys in attention, so a clip's valid frames do not
depend on what it is batched with. The reference implementation does not zero them between the
convolutions (its padded batches leak), which is why emorl compares against it clip by clip.

:func:`convert_state_dict` maps the official key names (fairseq ``Data2VecMultiModel`` /
FunASR ``Emotion2vec``) onto this module's, :func:`export_state_dict` maps them back.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

DEFAULT_FEATURE_ENCODER_SPEC = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"


@dataclass
class Data2Vec2Config:
    """The architecture fields of a data2vec 2.0 / emotion2vec config (defaults: fairseq's)."""

    embed_dim: int = 768
    depth: int = 8
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    norm_affine: bool = True
    layer_norm_first: bool = False
    normalize: bool = True  # layer-norm the waveform over the clip first
    # modalities.audio
    feature_encoder_spec: list[tuple[int, int, int]] = field(
        default_factory=lambda: parse_conv_spec(DEFAULT_FEATURE_ENCODER_SPEC)
    )
    extractor_mode: str = "layer_norm"
    conv_pos_width: int = 95
    conv_pos_groups: int = 16
    conv_pos_depth: int = 5
    conv_pos_pre_ln: bool = False
    prenet_depth: int = 4
    num_extra_tokens: int = 0
    use_alibi_encoder: bool = False
    alibi_scale: float = 1.0
    learned_alibi_scale_per_head: bool = False
    learned_alibi_scale_per_layer: bool = False
    num_alibi_heads: int | None = None  # None: num_heads

    @property
    def num_layers(self) -> int:
        """Transformer blocks, the modality prenet's included."""
        return self.prenet_depth + self.depth

    @property
    def conv_pos_kernel(self) -> int:
        return max(3, self.conv_pos_width // self.conv_pos_depth)

    @property
    def alibi_heads(self) -> int:
        return int(self.num_alibi_heads or self.num_heads)

    @property
    def samples_per_frame(self) -> int:
        return int(math.prod(stride for _, _, stride in self.feature_encoder_spec))

    @classmethod
    def from_model_conf(cls, model: dict, audio: dict | None = None, normalize: bool | None = None) -> "Data2Vec2Config":
        """From a FunASR ``model_conf`` / fairseq ``cfg.model`` dict (``modalities.audio`` inside)."""
        audio = dict(audio if audio is not None else (model.get("modalities") or {}).get("audio") or {})
        unsupported = []
        if audio.get("learned_alibi"):
            unsupported.append("learned_alibi")
        if audio.get("mlp_encoder"):
            unsupported.append("mlp_encoder")
        if unsupported:
            raise ValueError(f"data2vec 2.0 options not supported by emorl's port: {unsupported}")
        spec = audio.get("feature_encoder_spec", DEFAULT_FEATURE_ENCODER_SPEC)
        values: dict[str, Any] = {
            "embed_dim": model.get("embed_dim"),
            "depth": model.get("depth"),
            "num_heads": model.get("num_heads"),
            "mlp_ratio": model.get("mlp_ratio"),
            "norm_eps": model.get("norm_eps"),
            "norm_affine": model.get("norm_affine"),
            "layer_norm_first": model.get("layer_norm_first"),
            "normalize": model.get("normalize") if normalize is None else normalize,
            "feature_encoder_spec": parse_conv_spec(spec) if isinstance(spec, str) else [tuple(s) for s in spec],
        }
        for key in ("extractor_mode", "conv_pos_width", "conv_pos_groups", "conv_pos_depth", "conv_pos_pre_ln",
                    "prenet_depth", "num_extra_tokens", "use_alibi_encoder", "alibi_scale",
                    "learned_alibi_scale_per_head", "learned_alibi_scale_per_layer", "num_alibi_heads"):
            values[key] = audio.get(key)
        if isinstance(values["num_alibi_heads"], str):  # an unresolved ${model.num_heads}
            values["num_alibi_heads"] = None
        return cls(**{k: v for k, v in values.items() if v is not None})


def parse_conv_spec(spec: str) -> list[tuple[int, int, int]]:
    """``"[(512, 10, 5)] + [(512, 3, 2)] * 4 + ..."`` -> a list of (channels, kernel, stride).

    The official code ``eval``s this string; here it is parsed: a ``+``-joined list of bracketed
    tuple lists, each optionally ``* N``.
    """
    layers: list[tuple[int, int, int]] = []
    for part in spec.replace(" ", "").split("+"):
        match = re.fullmatch(r"\[((?:\(\d+,\d+,\d+\),?)+)\](?:\*(\d+))?", part)
        if match is None:
            raise ValueError(f"cannot parse feature_encoder_spec {spec!r} (at {part!r})")
        tuples = [tuple(int(v) for v in t) for t in re.findall(r"\((\d+),(\d+),(\d+)\)", match.group(1))]
        layers.extend(tuples * int(match.group(2) or 1))
    return layers  # type: ignore[return-value]


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi's geometric head slopes (Press et al. 2022), with its rule for non-powers of two."""

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_two(heads)
    lower = 2 ** math.floor(math.log2(heads))
    return power_of_two(lower) + alibi_slopes(2 * lower)[0::2][: heads - lower]


class ConvLayer(nn.Module):
    """One convolution of the feature encoder, its optional norm and GELU (norms run in float32)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, norm: str | None) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=False)
        self.norm_kind = norm
        if norm == "layer":
            self.norm = nn.LayerNorm(c_out, elementwise_affine=True)
        elif norm == "group":
            self.norm = nn.GroupNorm(c_out, c_out, affine=True)
        else:
            self.norm = None

    def forward(self, x: Tensor) -> Tensor:  # (B, C, T)
        x = self.conv(x)
        if self.norm_kind == "layer":
            x = F.layer_norm(x.float().transpose(1, 2), self.norm.normalized_shape, self.norm.weight.float(),
                             self.norm.bias.float(), self.norm.eps).transpose(1, 2).type_as(x)
        elif self.norm_kind == "group":
            x = F.group_norm(x.float(), self.norm.num_groups, self.norm.weight.float(), self.norm.bias.float(),
                             self.norm.eps).type_as(x)
        return F.gelu(x)


class Block(nn.Module):
    """A transformer block: attention with an additive bias, MLP, post- or pre-LN."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float, affine: bool, layer_norm_first: bool) -> None:
        super().__init__()
        self.heads = heads
        self.layer_norm_first = layer_norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim)
        self.attn.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.mlp.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def attention(self, x: Tensor, bias: Tensor | None) -> Tensor:
        B, T, D = x.shape
        q, k, v = self.attn.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype))
        return self.attn.proj(out.transpose(1, 2).reshape(B, T, D))

    def mlp_forward(self, x: Tensor) -> Tensor:
        return self.mlp.fc2(F.gelu(self.mlp.fc1(x)))

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        if self.layer_norm_first:
            x = x + self.attention(self.norm1(x), bias)
            # the official pre-LN block adds the MLP output to itself, not to x (kept as is)
            y = self.mlp_forward(self.norm2(x))
            return y + y
        x = self.norm1(x + self.attention(x, bias))
        return self.norm2(x + self.mlp_forward(x))


class Data2Vec2Encoder(nn.Module):
    """The data2vec 2.0 audio encoder; :meth:`forward` returns every hidden state (see the module doc)."""

    def __init__(self, cfg: Data2Vec2Config) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.extractor_mode not in ("layer_norm", "default"):
            raise ValueError(f"extractor_mode must be layer_norm or default, not {cfg.extractor_mode!r}")
        layers, c_in = [], 1
        for i, (c_out, kernel, stride) in enumerate(cfg.feature_encoder_spec):
            norm = "layer" if cfg.extractor_mode == "layer_norm" else ("group" if i == 0 else None)
            layers.append(ConvLayer(c_in, c_out, kernel, stride, norm))
            c_in = c_out
        self.feature_extractor = nn.ModuleList(layers)
        self.feature_norm = nn.LayerNorm(c_in)
        self.feature_proj = nn.Linear(c_in, cfg.embed_dim)
        self.pos_pre_norm = nn.LayerNorm(cfg.embed_dim) if cfg.conv_pos_pre_ln else None
        k = cfg.conv_pos_kernel
        self.pos_convs = nn.ModuleList(
            nn.Conv1d(cfg.embed_dim, cfg.embed_dim, k, padding=k // 2, groups=cfg.conv_pos_groups)
            for _ in range(cfg.conv_pos_depth)
        )
        self.extra_tokens = (
            nn.Parameter(torch.zeros(1, cfg.num_extra_tokens, cfg.embed_dim)) if cfg.num_extra_tokens > 0 else None
        )
        self.alibi_scale = None
        if cfg.use_alibi_encoder:
            shape = (cfg.num_layers if cfg.learned_alibi_scale_per_layer else 1, 1,
                     cfg.alibi_heads if cfg.learned_alibi_scale_per_head else 1, 1, 1)
            self.alibi_scale = nn.Parameter(torch.full(shape, float(cfg.alibi_scale)))
            self.register_buffer("alibi_slopes", torch.tensor(alibi_slopes(cfg.alibi_heads)), persistent=False)
        norm = lambda: nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)  # noqa: E731
        self.prenet_norm = None if cfg.layer_norm_first else norm()
        self.layers = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps, cfg.norm_affine, cfg.layer_norm_first)
            for _ in range(cfg.num_layers)
        )
        self.final_norm = norm() if cfg.layer_norm_first else None

    # -- lengths ----------------------------------------------------------------------------------
    def output_lengths(self, wave_lengths: Tensor) -> Tensor:
        """Valid frames of clips of these lengths (samples): the conv arithmetic, floor((L - k) / s) + 1."""
        lengths = wave_lengths.long()
        for _, kernel, stride in self.cfg.feature_encoder_spec:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
        return lengths.clamp(min=0)

    @property
    def min_samples(self) -> int:
        """The shortest input giving one frame (400 samples for the standard encoder)."""
        n = 1
        for _, kernel, stride in reversed(self.cfg.feature_encoder_spec):
            n = (n - 1) * stride + kernel
        return n

    # -- forward ----------------------------------------------------------------------------------
    def _alibi_bias(self, T: int, device: torch.device) -> Tensor | None:
        """(layers or 1, H, T, T) float32 scaled bias, or None without ALiBi."""
        if self.alibi_scale is None:
            return None
        pos = torch.arange(T, device=device)
        distance = -(pos[None, :] - pos[:, None]).abs().float()  # (T, T)
        bias = self.alibi_slopes.float()[:, None, None] * distance  # (H_alibi, T, T)
        scale = self.alibi_scale.float().clamp_min(0)[:, 0]  # (L or 1, H or 1, 1, 1)
        return bias[None] * scale

    @staticmethod
    def _zero_padding(x: Tensor, valid: Tensor | None) -> Tensor:
        return x if valid is None else x * valid[:, :, None].to(x.dtype)

    def forward(self, wave: Tensor, wave_lengths: Tensor | None = None) -> tuple[list[Tensor], Tensor]:
        """``wave`` (B, S) normalised, zero-padded -> (``num_layers + 1`` hidden states (B, T, D), lengths (B,))."""
        cfg = self.cfg
        x = wave.unsqueeze(1)
        for layer in self.feature_extractor:
            x = layer(x)
        x = self.feature_proj(self.feature_norm(x.transpose(1, 2)))  # (B, T, D)
        B, T, _ = x.shape
        if wave_lengths is None:
            lengths = torch.full((B,), T, dtype=torch.long, device=x.device)
        else:
            lengths = self.output_lengths(wave_lengths.to(x.device)).clamp(max=T)
        valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]  # (B, T)
        padded = bool((~valid).any())
        mask = valid if padded else None

        # relative positional encoder; padded frames are zeroed before every convolution
        pos = self.pos_pre_norm(x) if self.pos_pre_norm is not None else x
        pos = pos.transpose(1, 2)  # (B, D, T)
        for conv in self.pos_convs:
            if mask is not None:
                pos = pos * mask[:, None, :].to(pos.dtype)
            pos = conv(pos)
            if conv.kernel_size[0] % 2 == 0:
                pos = pos[:, :, :-1]
            pos = F.gelu(F.layer_norm(pos.transpose(1, 2), (pos.shape[1],)).transpose(1, 2))
        x = x + pos.transpose(1, 2)

        n_extra = 0
        if self.extra_tokens is not None:
            n_extra = self.extra_tokens.shape[1]
            x = torch.cat([self.extra_tokens.expand(B, -1, -1).to(x.dtype), x], dim=1)
        total = n_extra + T

        # attention bias: ALiBi over the frames (zero rows/columns for extra tokens), -inf on padded keys
        alibi = self._alibi_bias(T, x.device)
        key_bias = None
        if mask is not None:
            keep = F.pad(valid, (n_extra, 0), value=True)
            key_bias = torch.zeros(B, 1, 1, total, device=x.device).masked_fill(~keep[:, None, None, :], float("-inf"))

        def layer_bias(i: int) -> Tensor | None:
            bias = None
            if alibi is not None:
                scaled = alibi[i if alibi.shape[0] > 1 else 0]  # (H_alibi, T, T)
                full = torch.zeros(cfg.num_heads, total, total, device=x.device)
                full[: scaled.shape[0], n_extra:, n_extra:] = scaled
                bias = full[None]
            if key_bias is not None:
                bias = key_bias if bias is None else bias + key_bias
            return bias

        if self.prenet_norm is not None:
            x = self.prenet_norm(x)
        hidden = [x[:, n_extra:]]
        shared_bias = None if alibi is not None and alibi.shape[0] > 1 else layer_bias(0)
        for i, block in enumerate(self.layers):
            x = block(x, shared_bias if shared_bias is not None or alibi is None else layer_bias(i))
            hidden.append(x[:, n_extra:])
        if self.final_norm is not None:
            hidden[-1] = self.final_norm(x)[:, n_extra:]
        return hidden, lengths


# -- checkpoint key names ---------------------------------------------------------------------------
_PREFIX = "modality_encoders.AUDIO."
#: official key prefixes that feature extraction does not use
IGNORED_PREFIXES = (
    "_ema", "ema.", "proj.", "shared_decoder.", "recon_proj.", _PREFIX + "decoder.",
    "modality_encoders.IMAGE.", "modality_encoders.TEXT.",
)


def convert_state_dict(state: dict[str, Tensor], cfg: Data2Vec2Config) -> tuple[dict[str, Tensor], list[str]]:
    """Official (fairseq / FunASR) keys -> :class:`Data2Vec2Encoder` keys; also returns the unknown keys."""
    out: dict[str, Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(IGNORED_PREFIXES):
            continue
        new = _convert_key(key, cfg)
        if new is None:
            unknown.append(key)
            continue
        if new == "alibi_scale" and value.dim() == 4:  # old checkpoints (see upgrade_state_dict_named)
            value = value.unsqueeze(0)
        out[new] = value
    return out, unknown


def _convert_key(key: str, cfg: Data2Vec2Config) -> str | None:
    match = re.fullmatch(r"blocks\.(\d+)\.(.+)", key)
    if match:
        return f"layers.{cfg.prenet_depth + int(match.group(1))}.{match.group(2)}"
    if key.startswith("norm."):
        return "final_norm." + key[len("norm."):]
    if not key.startswith(_PREFIX):
        return None
    key = key[len(_PREFIX):]
    rules = [
        (r"local_encoder\.conv_layers\.(\d+)\.0\.weight", r"feature_extractor.\1.conv.weight"),
        (r"local_encoder\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.\1.norm.\2"),  # layer norm
        (r"local_encoder\.conv_layers\.(\d+)\.2\.(weight|bias)", r"feature_extractor.\1.norm.\2"),  # group norm
        (r"project_features\.1\.(weight|bias)", r"feature_norm.\1"),
        (r"project_features\.2\.(weight|bias)", r"feature_proj.\1"),
        (r"context_encoder\.norm\.(weight|bias)", r"prenet_norm.\1"),
        (r"context_encoder\.blocks\.(\d+)\.(.+)", r"layers.\1.\2"),
        (r"(extra_tokens|alibi_scale)", r"\1"),
    ]
    if cfg.conv_pos_pre_ln:
        rules += [
            (r"relative_positional_encoder\.0\.(weight|bias)", r"pos_pre_norm.\1"),
            (r"relative_positional_encoder\.1\.(\d+)\.0\.(weight|bias)", None),
        ]
    else:
        rules.append((r"relative_positional_encoder\.(\d+)\.0\.(weight|bias)", None))
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match is None:
            continue
        if replacement is None:  # positional convs: official index i + 1 (index 0 is a transpose)
            return f"pos_convs.{int(match.group(1)) - 1}.{match.group(2)}"
        return match.expand(replacement)
    return None


def export_state_dict(model: Data2Vec2Encoder) -> dict[str, Tensor]:
    """:class:`Data2Vec2Encoder` keys -> the official ones (what :func:`convert_state_dict` reads)."""
    cfg = model.cfg
    layer_norm = cfg.extractor_mode == "layer_norm"
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        if parts[0] == "feature_extractor":
            i, rest = parts[1], ".".join(parts[2:])
            if rest == "conv.weight":
                new = f"local_encoder.conv_layers.{i}.0.weight"
            else:
                new = f"local_encoder.conv_layers.{i}.2{'.1' if layer_norm else ''}.{parts[-1]}"
        elif parts[0] in ("feature_norm", "feature_proj"):
            new = f"project_features.{1 if parts[0] == 'feature_norm' else 2}.{parts[-1]}"
        elif parts[0] == "pos_pre_norm":
            new = f"relative_positional_encoder.0.{parts[-1]}"
        elif parts[0] == "pos_convs":
            inner = f"{int(parts[1]) + 1}.0.{parts[-1]}"
            new = f"relative_positional_encoder.{'1.' if cfg.conv_pos_pre_ln else ''}{inner}"
        elif parts[0] == "prenet_norm":
            new = f"context_encoder.norm.{parts[-1]}"
        elif parts[0] == "layers":
            i = int(parts[1])
            rest = ".".join(parts[2:])
            if i >= cfg.prenet_depth:
                out[f"blocks.{i - cfg.prenet_depth}.{rest}"] = value
                continue
            new = f"context_encoder.blocks.{i}.{rest}"
        elif parts[0] == "final_norm":
            out[f"norm.{parts[-1]}"] = value
            continue
        else:  # extra_tokens, alibi_scale
            new = key
        out[_PREFIX + new] = value
    return out

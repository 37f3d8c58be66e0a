"""What ``emorl plan`` plans for: one training config read as plain YAML (no torch, no jsonargparse).

    setting = read_setting("configs/emorl_esr.yaml", devices=8, nodes=1)

:class:`Setting` holds what the memory depends on: the model's sizes, what is trained (full
fine-tuning, LoRA), the strategy (sharded or replicated), the GRPO shape (G, answers, micro-batch,
beta), the evaluation generation, the PTR judge, and two switches of the loss computation that
exist in emorl's code (chunked vocabulary logits, prompt sharing) so that older measurements
can be reproduced.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from emorl.plan.sizes import Architecture, PlanError, architecture_of



def _logit_chunk_rows() -> int:
    """emorl/lalm/scoring.py's ``LOGIT_CHUNK_ROWS``, read from its source (importing it imports torch)."""
    source = (Path(__file__).resolve().parents[1] / "lalm" / "scoring.py").read_text(encoding="utf-8")
    return int(re.search(r"^LOGIT_CHUNK_ROWS\s*=\s*(\d+)", source, re.M).group(1))


LOGIT_CHUNK_ROWS = _logit_chunk_rows()
DTYPE_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: strategies whose class path or name means: parameters, gradients and optimiser states sharded
SHARDED_STRATEGIES = ("FSDP2Strategy", "ModelParallelStrategy", "fsdp", "FSDPStrategy")
#: audio tokens per second of audio (both families), the tower's window, template tokens around a prompt
AUDIO_TOKENS_PER_SECOND = 25
AUDIO_WINDOW_SECONDS = 30.0
CHARS_PER_TOKEN = 3.5  # English with tags through Qwen's BPE: about 3.5 characters a token (estimate)
TEMPLATE_TOKENS = 30  # chat template: system turn, <|im_start|>user, audio bos/eos, assistant turn
JUDGE_PROMPT_TOKENS = 420  # judge prompt without the answer: system, rubric, transcript, prosody (estimate)


@dataclass(frozen=True)
class Judge:
    """GRPO-PTR's judge: a frozen text LM generating ``max_new_tokens`` for ``batch_size`` answers."""

    arch: Architecture
    dtype_bytes: int
    batch_size: int
    max_new_tokens: int
    prompt_tokens: int


@dataclass(frozen=True)
class Setting:
    arch: Architecture
    module: str  # grpo | sft
    devices: int = 1
    nodes: int = 1
    sharded: bool = False
    full_finetune: bool = False
    lora_r: int | None = None  # None: no adapter
    lora_targets: tuple[str, ...] = DEFAULT_LORA_TARGETS
    train_projector: bool = False
    dtype_bytes: int = 2
    gradient_checkpointing: bool = True
    prompt_tokens: int = 0
    audio_tokens: int = 0  # of prompt_tokens (the rest is the estimated text)
    prompts_per_device: int = 1  # data.batch_size
    num_generations: int = 1
    max_new_tokens: int = 256
    micro_batch: int = 8  # answers per log-prob forward
    beta: float = 0.0
    eval_batch_size: int = 8
    eval_max_new_tokens: int = 256
    judge: Judge | None = None
    logit_chunk_rows: int | None = LOGIT_CHUNK_ROWS  # None: the whole micro-batch's logits at once
    share_prompts: bool = True  # GRPO's log-prob passes run each prompt once (scoring.shared_prompt_scores)
    strategy: str = "auto"

    @property
    def world(self) -> int:
        return self.devices * self.nodes

    @property
    def shards(self) -> int:
        return self.world if self.sharded else 1

    def with_(self, **changes) -> "Setting":
        return replace(self, **changes)


# -- reading the YAML -------------------------------------------------------------------------------
def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError:
        raise PlanError(f"config {path} does not exist or cannot be read") from None
    except yaml.YAMLError as err:
        raise PlanError(f"config {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise PlanError(f"config {path} has no `model:` section (emorl plan reads `emorl fit` configs)")
    return data


def _strategy_name(trainer: dict) -> str:
    strategy = trainer.get("strategy", "auto")
    if isinstance(strategy, dict):
        strategy = strategy.get("class_path", "")
    return str(strategy or "auto")


def is_sharded(strategy: str) -> bool:
    return any(strategy == s or strategy.endswith("." + s) for s in SHARDED_STRATEGIES)


def class_names(data: dict) -> list[str]:
    """The options the prompt lists: the named class space, else the corpus's (data_dir's name), else MELD's."""
    from emorl.labels import CORPUS_LABELS, NAMED_LABEL_SETS

    space = str(data.get("class_space") or "").lower()
    if space in NAMED_LABEL_SETS:
        return list(NAMED_LABEL_SETS[space].classes)
    corpus = Path(str(data.get("data_dir") or "meld")).name.lower()
    return list(CORPUS_LABELS.get(corpus, CORPUS_LABELS["meld"]).classes)


def prompt_tokens(arch: Architecture, prompt_format: str, names: list[str], seconds: float,
                  system_prompt: str | None) -> tuple[int, int]:
    """``(prompt tokens, audio tokens)``: audio tokens (25 per second of ``seconds``, at most the 30 s
    window) plus an estimate of the text tokens: the question of ``prompt_format`` over ``names`` and the
    system prompt at :data:`CHARS_PER_TOKEN` characters a token, plus :data:`TEMPLATE_TOKENS`."""
    from emorl.prompts import build_question

    try:
        question = build_question(prompt_format, names)
    except (KeyError, ValueError) as err:
        raise PlanError(f"prompt_format {prompt_format!r}: {err}") from None
    text = math.ceil((len(question) + len(system_prompt or "")) / CHARS_PER_TOKEN) + TEMPLATE_TOKENS
    audio = math.ceil(AUDIO_TOKENS_PER_SECOND * min(float(seconds), AUDIO_WINDOW_SECONDS)) if arch.audio else 0
    return audio + text, audio


def _judge(options: dict | None, args: dict, max_new_tokens: int) -> Judge | None:
    if not options or not args.get("ptr"):
        return None
    model = options.get("model")
    if not model:
        raise PlanError("the config's model.init_args.judge has no `model`")
    return Judge(architecture_of(str(model)), _dtype_bytes(options.get("dtype", "bfloat16")),
                 int(options.get("batch_size", 8)), int(options.get("max_new_tokens", 64)),
                 JUDGE_PROMPT_TOKENS + max_new_tokens)


def _dtype_bytes(name) -> int:
    try:
        return DTYPE_BYTES[str(name)]
    except KeyError:
        raise PlanError(f"dtype {name!r} is not one of {sorted(DTYPE_BYTES)}") from None


def _positive(value, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or str(value).strip() != str(number):
        raise PlanError(f"{what} must be a whole number >= 1, not {value!r}")
    return number


def read_setting(config: str | Path, devices=None, nodes=None) -> Setting:
    """The :class:`Setting` of an ``emorl fit`` config of ``GRPOLALM`` or ``SFTLALM``; ``devices`` /
    ``nodes`` override the trainer's (the strategy's sharding stays the config's)."""
    data = _load_yaml(Path(config))
    trainer = data.get("trainer") or {}
    model = data["model"]
    class_path = str(model.get("class_path", ""))
    module = {"GRPOLALM": "grpo", "SFTLALM": "sft"}.get(class_path.rsplit(".", 1)[-1])
    if module is None:
        raise PlanError(f"emorl plan covers GRPOLALM and SFTLALM configs, not {class_path or 'this model'!r}")
    args = model.get("init_args") or {}
    data_args = (data.get("data") or {}).get("init_args", data.get("data")) or {}
    arch = architecture_of(str(args.get("model", "qwen2-audio-7b-instruct")))
    if arch.audio is None:
        raise PlanError(f"model {args.get('model')!r} is a text LM, not an audio-language model")
    devices = _positive(devices, "--devices") if devices is not None else \
        _positive(trainer.get("devices", 1), "the config's trainer.devices (or give --devices N)")
    nodes = _positive(nodes, "--nodes") if nodes is not None else \
        _positive(trainer.get("num_nodes", 1), "the config's trainer.num_nodes (or give --nodes M)")
    strategy = _strategy_name(trainer)
    lora = args.get("lora")
    full = bool(args.get("full_finetune", False))
    new_tokens = int(args.get("max_new_tokens", 32 if module == "sft" else 256))
    names = class_names(data_args)
    prompt, audio = prompt_tokens(arch, str(args.get("prompt_format", "ir")), names, float(data_args.get("max_seconds", 30.0)),
                           args.get("system_prompt", "You are a helpful assistant."))
    grpo = module == "grpo"
    return Setting(
        arch=arch, module=module, devices=devices, nodes=nodes, sharded=is_sharded(strategy), strategy=strategy,
        full_finetune=full, lora_r=None if full or not lora else int(lora.get("r", 8)),
        lora_targets=tuple((lora or {}).get("target_modules") or DEFAULT_LORA_TARGETS),
        train_projector=bool(args.get("train_projector", False)), dtype_bytes=_dtype_bytes(args.get("dtype", "bfloat16")),
        gradient_checkpointing=bool(args.get("gradient_checkpointing", grpo)), prompt_tokens=prompt,
        audio_tokens=audio,
        prompts_per_device=int(data_args.get("batch_size", 1)),
        num_generations=int(args.get("num_generations", 8)) if grpo else 1, max_new_tokens=new_tokens,
        micro_batch=int(args.get("logprob_micro_batch", 8)) if grpo else int(data_args.get("batch_size", 1)),
        beta=float(args.get("beta", 0.04)) if grpo else 0.0,
        eval_batch_size=int(data_args.get("eval_batch_size", 8)),
        eval_max_new_tokens=int(args.get("eval_max_new_tokens", new_tokens)),
        judge=_judge(args.get("judge"), args, new_tokens) if grpo else None,
    )

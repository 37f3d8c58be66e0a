"""Bytes per GPU of one training step, term by term, and the peak over the step's phases.

    terms = plan_terms(setting)          # [Term(name, bytes, phases, note), ...]
    totals = phase_totals(terms)         # {phase: bytes}
    phase, peak = peak_of(terms)

A term lives in the phases it names; a phase's total is the sum of its terms; the step's peak is
the largest phase total (not the sum of every term: the unsharded generation copy is gone before
the loss, the logits before the layers' backward). The phases follow the shared contract's step
order: ``rollout`` (the policy unsharded once, G answers per prompt), ``judge`` (PTR), ``reference``
(beta > 0), the loss as three moments (``logits``: the end of the forward, every chunk's
log-softmax kept for backward; ``backward``: one decoder layer recomputed and differentiated;
``reduce``: the root group's gradients, unsharded, reduce-scattered), ``optimizer``, and the
validation generation ``evaluation``. :data:`ASSUMPTIONS` says what is freed before what.
"""

from __future__ import annotations

from dataclasses import dataclass

from emorl.plan.setting import Setting

PHASES_GRPO = ("rollout", "judge", "reference", "logits", "backward", "reduce", "optimizer", "evaluation")
PHASES_SFT = ("logits", "backward", "reduce", "optimizer", "evaluation")
LOSS = ("logits", "backward", "reduce")
FP32 = 4
#: mel frames of the audio window (30 s at 100 frames a second) before the encoder's stride-2 convolution
MEL_FRAMES = 3000

ASSUMPTIONS = (
    "Full fine-tuning: fp32 master weights, fp32 gradients and AdamW's two fp32 states for the language model, "
    "lm_head and projector (16 bytes a parameter), the frozen audio tower in the compute dtype; LoRA: the frozen base "
    "in the compute dtype, the adapter (and a trained projector) at 16 bytes a parameter.",
    "Sharded (FSDP2): those bytes divided by the world size (devices x nodes); replicated (ddp/auto): whole on every GPU.",
    "Gradients exist from the first backward of an update to the optimiser step (zero_grad sets them to None), "
    "so not while generating; optimiser states always (after the first step).",
    "rollout: the policy is unsharded once (every parameter gathered in the compute dtype) and resharded after it; "
    "unsharded full fine-tuning keeps a compute-dtype copy of the fp32 masters (autocast's cache) through "
    "generation and the loss. The KV cache holds G x batch answers of prompt + max_new_tokens tokens; the "
    "prefill computes the logits of every prompt position (the models' forward takes no logits_to_keep).",
    "judge (PTR): sharded like the reference, unsharded once around its call (after the policy was resharded); "
    "replicated: a whole copy on every GPU. Its KV cache: judge batch x (answer + ~420 prompt tokens + its new tokens).",
    "reference: full fine-tuning keeps a frozen compute-dtype copy (sharded: 1/world of it); LoRA uses the "
    "adapter-off base (no copy); beta 0: none. Sharded forwards gather two decoder layers at a time "
    "(the current and the prefetched one) and keep the root group (embeddings, lm_head, norms, projector, "
    "the audio tower's non-layer parts, the Omni vision tower) gathered through forward and backward.",
    "loss: activation checkpointing keeps each decoder layer's input; prompt sharing keeps every layer's prompt "
    "keys/values (the prompt's own and one copy per answer) until backward; every chunk's float32 log-softmax "
    "(answers x new tokens x vocabulary) is kept for backward; chunking bounds only the float32 logits, "
    "exp and entropy product computed alongside. The layer's backward frees the logits first.",
    "reduce (sharded): the root group's gradients, unsharded in the compute dtype plus their float32 copy for "
    "the reduce-scatter, once the layers' activations are gone; decoder layers reduce-scatter one at a time.",
    "optimizer: AdamW (foreach) allocates one float32 temporary of the local shard.",
    "Not counted: the CUDA context and allocator slack (the usable memory is the GPU's minus a reserve), "
    "communication buffers, the data loader, the host.",
)


@dataclass(frozen=True)
class Term:
    name: str
    bytes: int
    phases: tuple[str, ...]
    note: str = ""


def phases_of(setting: Setting) -> tuple[str, ...]:
    phases = PHASES_GRPO if setting.module == "grpo" else PHASES_SFT
    if setting.judge is None:
        phases = tuple(p for p in phases if p != "judge")
    if not setting.beta > 0:
        phases = tuple(p for p in phases if p != "reference")
    if not setting.sharded:
        phases = tuple(p for p in phases if p != "reduce")
    return phases


def trainable_parameters(setting: Setting) -> int:
    counts = setting.arch.counts
    if setting.full_finetune:
        return counts["language_model"] + counts["lm_head"] + counts.get("projector", 0)
    adapter = setting.arch.text.lora_parameters(setting.lora_r, setting.lora_targets) if setting.lora_r else 0
    return adapter + (counts.get("projector", 0) if setting.train_projector else 0)


def frozen_parameters(setting: Setting) -> int:
    counts, total = setting.arch.counts, setting.arch.total
    if setting.full_finetune:
        return total - trainable_parameters(setting)
    return total - (counts.get("projector", 0) if setting.train_projector else 0)


def root_parameters(setting: Setting) -> int:
    """What stays in FSDP's root group: every parameter outside the decoder and audio-encoder layers."""
    arch, audio = setting.arch, setting.arch.audio
    audio_layers = audio.layers * audio.layer_parameters() if audio else 0
    return arch.total - arch.text.layers * arch.text.layer_parameters() - audio_layers


def _trained_in_root_and_layer(s: Setting) -> tuple[int, int]:
    """Trainable parameters of the root group (embeddings, lm_head, final norm, projector) and of one
    decoder layer: their gradients exist unsharded until reduce-scattered."""
    counts, text = s.arch.counts, s.arch.text
    projector = counts.get("projector", 0) if s.full_finetune or s.train_projector else 0
    if s.full_finetune:
        embeddings = counts["language_model"] - text.layers * text.layer_parameters()
        return embeddings + counts["lm_head"] + projector, text.layer_parameters()
    adapter = text.lora_parameters(s.lora_r, s.lora_targets) // text.layers if s.lora_r else 0
    return projector, adapter


#: a recomputed layer's backward holds its forward activations and their gradients: measured 1.1-1.45 x
#: the forward's (tests/test_plan.py, a storage tracker on CPU)
BACKWARD_FACTOR = 1.25


def layer_activation_bytes(setting: Setting, tokens: int, attended: int | None = None, backward: bool = True) -> int:
    """One decoder layer's activations for ``tokens`` positions (norm inputs in float32, q, attention
    output, k/v over ``attended`` positions, the MLP's four intermediate tensors); times
    :data:`BACKWARD_FACTOR` for its backward pass."""
    text, d = setting.arch.text, setting.dtype_bytes
    kv = text.kv_heads * text.head_dim
    q = text.heads * text.head_dim
    per_token = d * (5 * text.hidden + 2 * q + 4 * text.intermediate) + 2 * FP32 * text.hidden
    total = tokens * per_token + (attended or tokens) * 2 * kv * d
    return int(BACKWARD_FACTOR * total) if backward else total


def _prefill_bytes(setting: Setting, rows: int, prompts: int) -> int:
    """Generation's largest no-grad moment: the audio tower over each clip's 30 s window, one decoder
    layer over the ``rows`` (repeated) prompts, or the prefill's logits: neither family's forward takes
    ``logits_to_keep``, so transformers' ``generate`` gets the logits of every prompt position."""
    text, d = setting.arch.text, setting.dtype_bytes
    lm = rows * setting.prompt_tokens * d * (3 * text.intermediate + 4 * text.hidden)
    logits = rows * setting.prompt_tokens * text.vocab * d + rows * text.vocab * FP32
    audio = setting.arch.audio
    tower = prompts * MEL_FRAMES * d * (4 * audio.width + audio.ffn) if audio else 0
    return max(lm, logits, tower)


def plan_terms(s: Setting) -> list[Term]:
    """Every term of the plan (see :data:`ASSUMPTIONS`)."""
    arch, text, d, k = s.arch, s.arch.text, s.dtype_bytes, s.shards
    grpo = s.module == "grpo"
    trainable, frozen = trainable_parameters(s), frozen_parameters(s)
    every = phases_of(s)
    terms = [
        Term("weights", (FP32 * trainable + d * frozen) // k, every,
             f"{trainable / 1e9:.3g} B trainable (fp32) + {frozen / 1e9:.3g} B frozen" + (f", / {k}" if k > 1 else "")),
        Term("gradients", FP32 * trainable // k, ("logits", "backward", "reduce", "optimizer"), "fp32"),
        Term("optimiser states", 2 * FP32 * trainable // k, every, "AdamW exp_avg + exp_avg_sq, fp32"),
    ]
    if grpo and s.beta > 0 and s.full_finetune:
        terms.append(Term("reference copy", d * arch.total // k, every, "frozen, compute dtype" + (f", / {k}" if k > 1 else "")))
    if s.judge is not None:
        j = s.judge
        terms.append(Term("PTR judge (resident)", j.dtype_bytes * j.arch.total // k, every,
                          f"{j.arch.total / 1e9:.3g} B" + (f", / {k}" if k > 1 else ", whole on every GPU")))
        if s.sharded:
            terms.append(Term("PTR judge (unsharded)", j.dtype_bytes * j.arch.total, ("judge",), "gathered around its call"))
        judge_tokens = j.batch_size * (j.prompt_tokens + j.max_new_tokens)
        terms.append(Term("PTR judge KV cache", judge_tokens * j.arch.text.kv_bytes_per_token(j.dtype_bytes), ("judge",),
                          f"{j.batch_size} x ({j.prompt_tokens} + {j.max_new_tokens}) tokens"))
    generation = ("rollout", "evaluation") if grpo else ("evaluation",)
    if s.sharded:
        terms.append(Term("generation copy (unsharded)", d * arch.total, generation, "all layers gathered once"))
    elif s.full_finetune and d < FP32:
        terms.append(Term("compute-dtype copy", d * trainable, generation + ("reference",) * grpo + LOSS,
                          "autocast's cast of the fp32 masters"))
    kv_token = text.kv_bytes_per_token(d)
    rows = s.prompts_per_device * s.num_generations
    if grpo:
        terms.append(Term("KV cache (generation)", rows * (s.prompt_tokens + s.max_new_tokens) * kv_token, ("rollout",),
                          f"{rows} x ({s.prompt_tokens} + {s.max_new_tokens}) tokens, {text.kv_heads} KV heads x {text.head_dim}"))
        terms.append(Term("prefill (generation)", _prefill_bytes(s, rows, s.prompts_per_device), ("rollout",),
                          "the largest of: a layer, the prompt logits, the audio tower"))
    terms.append(Term("KV cache (evaluation)", s.eval_batch_size * (s.prompt_tokens + s.eval_max_new_tokens) * kv_token,
                      ("evaluation",), f"{s.eval_batch_size} x ({s.prompt_tokens} + {s.eval_max_new_tokens}) tokens"))
    terms.append(Term("prefill (evaluation)", _prefill_bytes(s, s.eval_batch_size, s.eval_batch_size), ("evaluation",)))
    terms += _loss_terms(s)
    return [t for t in terms if t.bytes > 0]


def _loss_terms(s: Setting) -> list[Term]:
    """The log-prob passes: reference (no grad) and the loss's forward/backward, per micro-batch."""
    text, d, k = s.arch.text, s.dtype_bytes, s.shards
    grpo = s.module == "grpo"
    answers = min(s.micro_batch, s.prompts_per_device * s.num_generations) if grpo else s.prompts_per_device
    new, prompt = s.max_new_tokens, s.prompt_tokens
    shared = grpo and s.share_prompts and s.num_generations > 1
    prompts = -(-answers // s.num_generations) if shared else answers  # distinct prompts in a micro-batch
    tokens = prompts * prompt + answers * new if shared else answers * (prompt + new)
    reference = ("reference",) if grpo and s.beta > 0 else ()
    terms = []
    if s.sharded:
        root = root_parameters(s)
        layer = text.layer_parameters()
        terms.append(Term("FSDP gathered (root + 2 layers)", d * (root + 2 * layer), reference + LOSS,
                          f"root group {root / 1e9:.3g} B"))
        root_trained, layer_trained = _trained_in_root_and_layer(s)
        terms.append(Term("root gradients (unsharded)", (d + FP32) * root_trained, ("reduce",),
                          "compute dtype + fp32 for reduce-scatter"))
        terms.append(Term("layer gradients (unsharded)", (d + FP32) * layer_trained, ("backward",)))
    inputs = tokens * text.hidden * d * text.layers if s.gradient_checkpointing else \
        text.layers * layer_activation_bytes(s, tokens, backward=False)
    terms.append(Term("checkpointed activations" if s.gradient_checkpointing else "activations", inputs,
                      ("logits", "backward"), f"{tokens} positions x {text.layers} layers"))
    if shared:
        kept = (prompts + answers) * prompt * text.kv_bytes_per_token(d)
        terms.append(Term("prompt keys/values (sharing)", kept, reference + ("logits", "backward"),
                          f"({prompts} + {answers}) x {prompt} tokens"))
    attended = answers * (prompt + new)
    if shared:  # the prompt pass and the answer pass are checkpointed (and recomputed) separately
        recompute = max(layer_activation_bytes(s, prompts * prompt),
                        layer_activation_bytes(s, answers * new, attended))
    else:
        recompute = layer_activation_bytes(s, tokens, attended)
    terms.append(Term("layer recompute + backward", recompute, ("backward",)))
    chunk = min(s.logit_chunk_rows or answers, answers)
    logit = new * text.vocab
    terms.append(Term("vocabulary logits", answers * logit * FP32 + chunk * logit * 3 * FP32, ("logits",),
                      f"{answers} x {new} x {text.vocab} log-softmax kept (fp32), "
                      + (f"chunks of {chunk}" if s.logit_chunk_rows else "not chunked")))
    if reference:
        working = layer_activation_bytes(s, answers * new if shared else tokens, attended, backward=False)
        terms.append(Term("reference pass", chunk * logit * (d + FP32) + working, reference,
                          "no grad: one layer, one chunk of logits"))
    terms.append(Term("AdamW temporary", FP32 * trainable_parameters(s) // k, ("optimizer",)))
    return terms


def phase_totals(terms: list[Term], phases: tuple[str, ...]) -> dict[str, int]:
    return {phase: sum(t.bytes for t in terms if phase in t.phases) for phase in phases}


def peak_of(setting: Setting) -> tuple[str, int]:
    """The phase with the largest total, and that total (bytes per GPU)."""
    totals = phase_totals(plan_terms(setting), phases_of(setting))
    phase = max(totals, key=totals.get)
    return phase, totals[phase]

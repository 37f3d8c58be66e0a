"""Supervised fine-tuning of an audio-language model on emotion answers (EMO-RL's "SFT + IR").

    emorl fit --config configs/sft/sft_ir_meld.yaml
    emorl test --config configs/sft/sft_ir_meld.yaml --ckpt_path runs/sft_ir_meld/version_N/checkpoints/BEST.ckpt

Each training clip becomes the prompt of :mod:`emorl.prompts` (format ``ir`` by default) and a
target answer: ``<answer>label</answer>``, or, when the format asks for reasoning, the full answer
from the manifest row (``eur``: a ``rationale`` string in ``<think>``; ``esr``: a ``reasoning`` dict
with the four ESR tags) or, with ``reasoning: template``, from :mod:`emorl.reasoning`. The loss is the mean negative log-likelihood of the
target tokens (the answer and its end-of-turn token) only: the prompt, the audio and the padding
are never scored. The prompt embeddings (audio tower once per clip) come from
:func:`emorl.lalm.inputs.embed_prompts`, the same path generation and GRPO use.

Paper defaults (EMO-RL section 4.2): AdamW, lr 1e-5, 5 epochs. LoRA by default (r 8, alpha 16
on every linear layer of the language model; the audio tower frozen); ``full_finetune: true``
trains the whole language model, its head and the projector, with fp32 master weights and compute
in ``dtype`` (autocast on one device / DDP; FSDP2's mixed precision when sharded under
``ModelParallelStrategy``: :mod:`emorl.models.parallel`, ``docs/scale.md``). Checkpoints hold only the trained weights (LoRA adapters and a
trained projector: a few MB for the 7B model); ``emorl test --ckpt_path`` loads them onto the base
model named in the config. Validation and test generate answers greedily and score them like the
zero-shot module (UA / WA / F1 / parse rate, predictions files, sample answers in TensorBoard).

EmotionThinker-Base (``configs/emotionthinker/base_prosody_*.yaml``, ``docs/prosody.md``): with
``tasks`` (e.g. ``{emotion: 1.0, prosody: 1.0}``) each clip of an epoch trains on one task drawn by
:class:`emorl.prosody.task.TaskMix` from (``task_seed``, epoch, key): the emotion answer above,
or the description of its pitch, loudness and speaking rate (:data:`emorl.prompts.PROSODY_QUESTION`
-> :func:`emorl.prosody.task.describe_prosody` of the row's measured bins). A clip drawn for the
description whose row has no bins trains on the emotion task (counted, logged). Validation and
test then also describe every clip with bins and log ``val/prosody/{pitch,energy,rate}_acc``,
``mean_acc``, ``named_rate`` and ``faithfulness`` (``test/<set>/prosody/...``). Without ``tasks``
the module is the plain emotion SFT. ``init_checkpoint`` starts from the trained weights of an
earlier SFT run (stage 1 -> stage 2), as :class:`emorl.models.grpo.GRPOLALM`'s does.

A mix of answer formats: with ``extra_formats`` (e.g. ``prompt_format: esr``, ``extra_formats:
[ir]``) each training clip of an epoch is asked for one format drawn by
:class:`emorl.prompts.FormatMix` from (``task_seed``, epoch, key) and trained on that format's
target, so one warm start answers both the ESR and the IR question (the demo's GRPO BCR + IR and
EMO-RL rows start from it). Validation and test ask for ``prompt_format`` alone.
"""

from __future__ import annotations

import logging
from collections import Counter

import lightning as L
import torch

from emorl.lalm import load_backbone
from emorl.lalm.answers import answer_batch, clips_from_batch, target_ids
from emorl.lalm.backbone import DEFAULT_LORA
from emorl.lalm.generation import compute_context, generate
from emorl.lalm.inputs import build_prompts, embed_prompts
from emorl.lalm.scoring import completion_scores
from emorl.models.checkpoints import (
    check_trainable_weights,
    enter_train_mode,
    keep_trainable_weights,
    load_trained_weights,
)
from emorl.models.evaluation import (
    StageMetrics,
    finish_test,
    log_answer_samples,
    predict_batch,
    test_batch,
)
from emorl.models.optim import adamw_with_warmup
from emorl.models.parallel import configure_backbone
from emorl.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    PROSODY_QUESTION,
    FormatMix,
    PromptBuilder,
    build_messages,
    get_format,
    target_text,
)
from emorl.prosody.task import TaskMix, describe_prosody, known_levels, read_description, row_bins
from emorl.prosody.task_metrics import DescriptionAccuracy
from emorl.reasoning import esr_blocks, eur_rationale

log = logging.getLogger(__name__)


def sft_target(format_name: str, label: str, row: dict | None, reasoning: str = "manifest") -> str:
    """The answer a clip is trained towards: reasoning from its row when the format wants it.

    ``reasoning="template"`` builds the reasoning from the row's transcript, key words and prosody
    caption (:mod:`emorl.reasoning`) when the row carries none; ``"manifest"`` falls back to an IR
    target instead.
    """
    row = row or {}
    if format_name in ("eur", "cot"):
        if row.get("rationale"):
            return target_text(format_name, label, rationale=row["rationale"])
        if reasoning == "template":
            return target_text(format_name, label, rationale=eur_rationale(row, label))
    if format_name == "esr":
        if isinstance(row.get("reasoning"), dict):
            return target_text("esr", label, structured=row["reasoning"])
        if reasoning == "template":
            return target_text("esr", label, structured=esr_blocks(row, label))
    return target_text("ir", label)


class SFTLALM(L.LightningModule):
    """Supervised fine-tuning of Qwen2-Audio / the Qwen2.5-Omni thinker on emotion answers.

    Args:
        class_names: the emotion options (linked from the DataModule's label set).
        model: a zoo name or a local folder (the base model; checkpoints add the trained weights).
        init_checkpoint: an emorl SFT checkpoint (same LoRA / projector options) whose trained
            weights start this run, e.g. EmotionThinker-Base before the emotion-reasoning SFT.
        prompt_format: ``ir`` (the paper's SFT + IR), ``eur`` or ``esr`` (reasoning targets); the
            format validation and test ask for.
        extra_formats: more answer formats mixed into training, a list (``[ir]``: each format
            of ``[prompt_format, *extra_formats]`` equally often) or a mapping name -> weight
            (``prompt_format`` weighs 1); each clip's format per epoch is drawn by
            :class:`emorl.prompts.FormatMix`. ``null``: ``prompt_format`` alone.
        reasoning: where ``eur`` / ``esr`` targets get their reasoning when a manifest row has none:
            ``manifest`` (no template: an IR target, counted in the log) or ``template``
            (:mod:`emorl.reasoning`: transcript, key words, prosody caption, label).
        tasks: the SFT task mix, ``{emotion: w, prosody: w}`` (or a list of names, equal weights):
            each clip's task per epoch is drawn from these weights (:class:`TaskMix`); ``null``:
            the emotion task alone. The emotion metrics are computed when ``emotion`` has a
            weight, the description accuracies when ``prosody`` has one.
        task_seed: seeds the task and format draws (same seed, epoch and clip key: same task, same format).
        prosody_max_new_tokens: description length at validation / test.
        system_prompt / shuffle_options / prompt_seed: see :class:`emorl.prompts.PromptBuilder`.
        lora: LoRA options (``r``, ``alpha``, ``dropout``, ``target_modules``); ``null`` with
            ``full_finetune: true`` for full fine-tuning.
        train_projector: also train the audio -> text projector.
        full_finetune: train every language-model weight (needs far more memory).
        lr / weight_decay / warmup_steps: AdamW (EMO-RL: lr 1e-5) with linear warm-up.
        dtype / attn_implementation / gradient_checkpointing: how the backbone runs.
        max_new_tokens: answer length at validation / test.
        answers_to_log: sample answers per test set written to TensorBoard.
    """

    def __init__(
        self,
        class_names: list[str],
        model: str = "qwen2-audio-7b-instruct",
        init_checkpoint: str | None = None,
        prompt_format: str = "ir",
        extra_formats: dict[str, float] | list[str] | None = None,
        reasoning: str = "manifest",
        tasks: dict[str, float] | list | None = None,
        task_seed: int = 0,
        prosody_max_new_tokens: int = 24,
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        shuffle_options: bool = False,
        prompt_seed: int = 0,
        lora: dict | None = None,
        train_projector: bool = False,
        full_finetune: bool = False,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        dtype: str = "bfloat16",
        attn_implementation: str | None = "sdpa",
        gradient_checkpointing: bool = False,
        max_new_tokens: int = 32,
        answers_to_log: int = 16,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if reasoning not in ("manifest", "template"):
            raise ValueError(f"reasoning must be 'manifest' or 'template', not {reasoning!r}")
        if lora is None and not full_finetune:
            lora = dict(DEFAULT_LORA)
        self.prompts = PromptBuilder(class_names, prompt_format, system_prompt, shuffle_options, prompt_seed)
        self.format_mix = FormatMix.from_config(prompt_format, extra_formats, task_seed)
        self.format_counts: Counter = Counter()  # training clips per answer format, this epoch
        self.task_mix = TaskMix.from_config(tasks, task_seed)
        self.prosody_messages = build_messages(PROSODY_QUESTION, system_prompt)
        self.backbone = load_backbone(
            model, dtype=dtype, attn_implementation=attn_implementation,
            gradient_checkpointing=gradient_checkpointing, lora=None if full_finetune else lora,
            train_projector=train_projector, full_finetune=full_finetune,
        )
        self.model = self.backbone.model
        self.metrics = StageMetrics(class_names)
        self.strict_loading = False  # checkpoints hold only the trained weights
        self.test_results: dict[str, dict[str, float]] = {}
        self.fallback_targets = 0
        self.val_description = DescriptionAccuracy()
        self.test_descriptions: dict[str, DescriptionAccuracy] = {}  # per test set, made on demand
        self.description_samples: dict[str, list[dict]] = {}
        self.task_counts: Counter = Counter()  # training clips per task, this epoch
        self.fallback_tasks = 0  # training clips drawn for prosody whose row had no bins, this epoch
        if init_checkpoint:
            if full_finetune:  # fp32 masters before loading: a full-fine-tuning checkpoint's are not rounded
                self.backbone.use_fp32_masters()
            load_trained_weights(self, init_checkpoint)

    def uses(self, task: str) -> bool:
        """Whether ``task`` (``emotion`` / ``prosody``) is trained, hence evaluated."""
        return task == "emotion" if self.task_mix is None else self.task_mix.uses(task)

    # -- training ---------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """FSDP2 under ``ModelParallelStrategy``, fp32 masters under full fine-tuning on every path
        (:func:`emorl.models.parallel.configure_backbone`)."""
        configure_backbone(self)

    def on_fit_start(self) -> None:
        enter_train_mode(self)

    def plan_tasks(self, batch: dict, epoch: int | None) -> list[str]:
        """Each clip's task: ``emotion`` without a mix; else :meth:`TaskMix.plan` for ``epoch``
        (``None``: validation, one fixed draw, not counted)."""
        keys = batch["key"]
        if self.task_mix is None:
            return ["emotion"] * len(keys)
        rows = batch.get("row") or [None] * len(keys)
        tasks, fallbacks = self.task_mix.plan(keys, rows, "val" if epoch is None else epoch)
        if epoch is not None:
            self.task_counts.update(tasks)
            self.fallback_tasks += fallbacks
        return tasks

    def sft_loss(self, batch: dict, epoch: int | None = None) -> tuple[torch.Tensor, int]:
        """Mean NLL of the target tokens of a DataModule batch, and the number of target tokens.

        ``epoch`` draws the task mix's tasks of that training epoch (``None``: validation).
        """
        names = self.hparams.class_names
        labels = [names[int(i)] for i in batch["label"]]
        rows = batch.get("row") or [None] * len(labels)
        tasks = self.plan_tasks(batch, epoch)
        formats = self.format_mix.plan(batch["key"], epoch)
        messages = self.prompts.messages(batch["key"], formats)
        targets = []
        for i, (task, fmt, label, row) in enumerate(zip(tasks, formats, labels, rows)):
            if task == "prosody":
                messages[i] = self.prosody_messages
                targets.append(describe_prosody(row_bins(row)))
            else:
                targets.append(sft_target(fmt, label, row, self.hparams.reasoning))
                if epoch is not None:
                    self.format_counts[fmt] += 1
                if get_format(fmt).reasoning and targets[-1].startswith("<answer>"):
                    self.fallback_targets += 1
        inputs = build_prompts(self.backbone, messages, clips_from_batch(batch))
        grad = torch.enable_grad() if self.hparams.train_projector or self.hparams.full_finetune else torch.no_grad()
        with grad, compute_context(self.backbone):
            prompt = embed_prompts(self.backbone, inputs)
        ids, mask = target_ids(self.backbone.tokenizer, targets, self.backbone.pad_token_id)
        logps, _ = completion_scores(self.backbone, prompt, ids.to(self.device), mask.to(self.device))
        tokens = int(mask.sum())
        return -(logps.sum() / max(tokens, 1)), tokens

    def training_step(self, batch: dict | None, batch_idx: int) -> torch.Tensor | None:
        if batch is None:
            return None
        loss, tokens = self.sft_loss(batch, self.current_epoch)
        size = len(batch["key"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/target_tokens", float(tokens), batch_size=size)
        return loss

    def on_train_epoch_end(self) -> None:
        if self.fallback_targets:
            log.warning("%d training targets had no reasoning in their manifest row and used an IR "
                        "target instead", self.fallback_targets)
            self.fallback_targets = 0
        if self.format_mix.mixed:
            self.log_dict({f"train/formats/{fmt}": float(self.format_counts.get(fmt, 0))
                           for fmt in self.format_mix.weights}, reduce_fx="sum", sync_dist=True)
            log.info("epoch %d: emotion answers per format: %s", self.current_epoch,
                     ", ".join(f"{fmt} {self.format_counts.get(fmt, 0)}" for fmt in self.format_mix.weights))
        self.format_counts.clear()
        if self.task_mix is not None:
            counts = {task: self.task_counts.get(task, 0) for task in ("emotion", "prosody")}
            self.log_dict({f"train/tasks/{task}": float(n) for task, n in counts.items()}
                          | {"train/tasks/prosody_fallbacks": float(self.fallback_tasks)},
                          reduce_fx="sum", sync_dist=True)
            log.info("epoch %d: %d clips on the emotion task, %d on the prosody description",
                     self.current_epoch, counts["emotion"], counts["prosody"])
            if self.fallback_tasks:
                log.warning("%d training clips drawn for the prosody description have no prosody bins "
                            "in their manifest row (run `emorl data prosody` on the corpus) and trained "
                            "on the emotion task instead", self.fallback_tasks)
            self.task_counts.clear()
            self.fallback_tasks = 0

    def configure_optimizers(self):
        # no scheduler without warm-up: what SFT checkpoints have always held
        return adamw_with_warmup(self, self.hparams.lr, self.hparams.weight_decay, self.hparams.warmup_steps,
                                 scheduler_without_warmup=False)

    # -- evaluation -------------------------------------------------------------------------------
    def answer(self, batch: dict):
        """Greedy answers for a DataModule batch: ``(texts, class ids (-1: unparsable), result)``
        (what :mod:`emorl.models.evaluation`'s test / predict bodies call)."""
        return answer_batch(self.backbone, self.prompts, batch, self.hparams.max_new_tokens)

    def describe(self, batch: dict) -> tuple[list[str], list[dict], list[str]]:
        """Greedy descriptions of the batch's clips that have known bins: ``(texts, bins, keys)``."""
        rows = batch.get("row") or [None] * len(batch["key"])
        chosen = [i for i, row in enumerate(rows) if known_levels(row_bins(row))]
        if not chosen:
            return [], [], []
        clips = clips_from_batch(batch)
        inputs = build_prompts(self.backbone, [self.prosody_messages] * len(chosen), [clips[i] for i in chosen])
        result = generate(self.backbone, inputs, max_new_tokens=self.hparams.prosody_max_new_tokens, stop_strings=None)
        return result.texts, [row_bins(rows[i]) for i in chosen], [batch["key"][i] for i in chosen]

    def validation_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is None:
            return
        with torch.no_grad():
            loss, _ = self.sft_loss(batch)
        self.log("val/loss", loss, batch_size=len(batch["key"]), sync_dist=True)
        if self.uses("emotion"):
            _, preds, _ = self.answer(batch)
            self.metrics.update("val", preds.to(self.device), batch["label"])
        if self.uses("prosody"):
            texts, bins, _ = self.describe(batch)
            self.val_description.update(texts, bins)

    def on_validation_epoch_end(self) -> None:
        self.metrics.log_validation(self)
        if self.uses("prosody"):  # on every rank: compute() gathers the counts of all of them
            scores = self.val_description.compute()
            if scores["clips"] > 0:
                self.log_dict({f"val/prosody/{name}": value for name, value in scores.items()})
            self.val_description.reset()

    def test_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> dict | None:
        outputs = test_batch(self, batch, dataloader_idx) if self.uses("emotion") else None
        if batch is not None and self.uses("prosody"):
            name = self.trainer.datamodule.test_names[dataloader_idx]
            texts, bins, keys = self.describe(batch)
            if name not in self.test_descriptions:
                self.test_descriptions[name] = DescriptionAccuracy().to(self.device)
            self.test_descriptions[name].update(texts, bins)
            self.description_samples.setdefault(name, []).extend(
                {"key": key, "label": describe_prosody(b), "prediction": describe_prosody(read_description(text)),
                 "text": text}
                for key, b, text in zip(keys, bins, texts))
        return outputs

    def on_test_epoch_end(self) -> None:
        self.test_results = finish_test(self, self.prompts.format.reading) if self.uses("emotion") else {}
        for name, metric in self.test_descriptions.items():
            scores = {f"prosody/{k}": float(v) for k, v in metric.compute().items()}
            self.log_dict({f"test/{name}/{k}": v for k, v in scores.items()})
            self.test_results.setdefault(name, {}).update(scores)
            log_answer_samples(self, f"test/{name}/descriptions", self.description_samples.pop(name, []),
                               self.hparams.answers_to_log)
            metric.reset()

    def predict_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        return predict_batch(self, batch, dataloader_idx)

    # -- checkpoints: trained weights only ----------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep_trainable_weights(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_trainable_weights(self, checkpoint)


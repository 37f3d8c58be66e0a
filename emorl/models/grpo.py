"""EMO-RL: GRPO on an audio-language model with format and emotion-similarity rewards.

    emorl fit --config configs/emorl_esr.yaml

Each training step (manual optimisation):

1. the batch's prompts are embedded once (each clip through the audio tower once) and G answers
   per prompt are sampled from those embeddings in one batched generation
   (:func:`emorl.rl.rollout.sample_rollout`, with the :class:`~emorl.rl.rollout.RolloutOptions`
   built once from the config), on every rank for its own prompts (FSDP: gathered once per rollout);
2. the answers are scored by the configured reward list (:mod:`emorl.rl.rewards`; ESWR's alpha
   follows its schedule) and turned into group-normalised advantages;
3. when ``beta > 0`` the reference log-probs are computed from the same embeddings, with the LoRA
   adapter switched off (no second copy of the weights) or, under full fine-tuning, with a
   frozen copy (sharded like the policy under FSDP); when ``num_iterations > 1`` the sampling
   policy's log-probs are kept;
4. the clipped policy-gradient loss (:func:`emorl.rl.loss.grpo_loss`, normalisation
   ``loss_type``) is backpropagated ``logprob_micro_batch`` answers at a time, gradients are
   accumulated over ``accumulate_grad_batches`` batches and clipped, then the optimiser steps;
   with ``num_iterations > 1`` the accumulated rollouts are reused that many times.

Logged (TensorBoard, ``train/...``, averaged over ranks): every reward component's mean and std,
the total reward, the share of zero-std groups, format rate, accuracy, alpha, KL, clip fraction,
entropy, answer length (mean, max), truncation rate, seconds spent generating, scoring and
updating (policy pass and optimiser apart), and a few sampled answers as text.

GRPO-PTR (EmotionThinker, ``ptr:`` + ``judge:``; ``docs/ptr.md``): the reward becomes
``w_format * format + w_outcome * outcome + on * w_reason * tau * reasoning``, the reasoning
scored by a judge LM (:class:`emorl.rl.ptr.PTRRewards`); its switch state goes into
the checkpoint (``emorl_ptr``), the judge never does.

Checkpoints hold the trained weights only, with alpha and every rank's RNG states; Lightning adds
the optimiser, scheduler, step and (through the DataModule's resumable loader) the position in the
epoch, so a resumed run continues the interrupted one exactly.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time

import lightning as L
import torch

from emorl.lalm import load_backbone
from emorl.lalm.answers import answer_batch, clips_from_batch
from emorl.lalm.backbone import DEFAULT_LORA
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
from emorl.models.parallel import configure_backbone, data_parallel_mesh, micro_batch_sync
from emorl.prompts import DEFAULT_SYSTEM_PROMPT, PromptBuilder
from emorl.rl.loss import grpo_loss
from emorl.rl.ptr import PTRRewards
from emorl.rl.rewards import RewardContext, RewardSet
from emorl.rl.rollout import Rollout, RolloutOptions, rollout_metrics, sample_rollout
from emorl.rl.schedule import alpha_at
from emorl.rng import capture_all_ranks, restore_this_rank

log = logging.getLogger(__name__)

DEFAULT_REWARDS = [{"name": "format_esr", "weight": 1.0}, {"name": "eswr", "weight": 1.0}]


class GRPOLALM(L.LightningModule):
    """GRPO fine-tuning of Qwen2-Audio / the Qwen2.5-Omni thinker (EMO-RL).

    Args:
        class_names: the emotion options (linked from the DataModule).
        model: zoo name or folder of the base model.
        init_checkpoint: an SFT checkpoint (``emorl fit`` of :class:`SFTLALM` with the same LoRA
            options) whose trained weights start the policy. Under LoRA the reference is the base
            model (adapter off); under full fine-tuning a frozen copy of the starting policy.
        prompt_format / system_prompt / shuffle_options / prompt_seed: the prompts (``esr``: EMO-RL).
        rewards: the reward list, ``[{name, weight}]`` (:data:`emorl.rl.rewards.REWARDS`).
        gamma / alpha_schedule / alpha_start / alpha_end: ESWR (alpha over ``trainer.max_steps``).
        num_generations: G answers per prompt (EMO-RL: 6); temperature / top_p: sampling.
        max_new_tokens: answer length limit; mask_truncated: drop unfinished answers from the loss.
        beta: KL weight (k3 estimator) to the reference policy; 0 skips the reference pass.
        epsilon / epsilon_high: clip range of the ratio; num_iterations: updates per rollout.
        loss_type: ``grpo`` | ``bnpo`` | ``dr_grpo`` | ``dapo``; scale_rewards: ``group`` |
            ``batch`` | ``none``.
        accumulate_grad_batches / gradient_clip_val: done inside the module (manual optimisation).
        logprob_micro_batch: answers per log-prob forward.
        lora / full_finetune / dtype / attn_implementation / gradient_checkpointing: the backbone.
        lr / weight_decay / warmup_steps: AdamW with linear warm-up (EMO-RL: lr 1e-6).
        eval_max_new_tokens / answers_to_log: greedy evaluation and logged samples.
        ptr: GRPO-PTR (:class:`emorl.rl.ptr.PTRConfig`: ``w_format``, ``w_outcome``, ``w_reason``,
            ``format``, ``outcome``, ``accuracy_threshold``, ``accuracy_window``, ``latch``,
            ``judge_when_off``); replaces ``rewards`` (leave it null). ``None``: plain GRPO.
        judge: GRPO-PTR's judge, ``{model, dtype, device, batch_size, max_new_tokens}``
            (:class:`emorl.rl.judge.Judge`; ``device`` null = the policy's).
    """

    def __init__(
        self,
        class_names: list[str],
        model: str = "qwen2-audio-7b-instruct",
        init_checkpoint: str | None = None,
        prompt_format: str = "esr",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        shuffle_options: bool = False,
        prompt_seed: int = 0,
        rewards: list[dict] | None = None,
        gamma: float = 0.7,
        alpha_schedule: str = "linear",
        alpha_start: float = 1.0,
        alpha_end: float = 0.0,
        num_generations: int = 6,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_new_tokens: int = 256,
        mask_truncated: bool = False,
        beta: float = 0.04,
        epsilon: float = 0.2,
        epsilon_high: float | None = None,
        num_iterations: int = 1,
        loss_type: str = "grpo",
        scale_rewards: str = "group",
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = 1.0,
        logprob_micro_batch: int = 8,
        lora: dict | None = None,
        full_finetune: bool = False,
        dtype: str = "bfloat16",
        attn_implementation: str | None = "sdpa",
        gradient_checkpointing: bool = False,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        eval_max_new_tokens: int = 256,
        answers_to_log: int = 8,
        ptr: dict | None = None,
        judge: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        if lora is None and not full_finetune:
            lora = dict(DEFAULT_LORA)
        self.prompts = PromptBuilder(class_names, prompt_format, system_prompt, shuffle_options, prompt_seed)
        self.rollout_options = RolloutOptions(
            num_generations=num_generations, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            scale_rewards=scale_rewards, mask_truncated=mask_truncated,
        )
        if ptr is not None and rewards is not None:
            raise ValueError("with ptr the rewards are ptr.format and ptr.outcome: set rewards to null")
        self.ptr = PTRRewards.from_options(ptr, judge, class_names) if ptr is not None else None
        self.rewards = RewardSet.from_config(self.ptr.reward_list() if self.ptr else rewards or DEFAULT_REWARDS)
        self.backbone = load_backbone(
            model, dtype=dtype, attn_implementation=attn_implementation,
            gradient_checkpointing=gradient_checkpointing, lora=None if full_finetune else lora,
            full_finetune=full_finetune,
        )
        self.model = self.backbone.model
        self.metrics = StageMetrics(class_names)
        self.strict_loading = False
        self.buffer: list[Rollout] = []
        self.last_update_seconds: dict[str, float] = {}
        self._pending_rng: list[dict] | None = None
        self.last_rollout: Rollout | None = None
        self.alpha = float(alpha_start)
        self.test_results: dict[str, dict[str, float]] = {}
        if init_checkpoint:
            if full_finetune:  # fp32 masters before loading: the SFT checkpoint's are not rounded to dtype
                self.backbone.use_fp32_masters()
            load_trained_weights(self, init_checkpoint)
        self.reference = None
        if full_finetune and beta > 0:  # no adapter to switch off: a frozen copy of the start (never saved)
            reference = copy.deepcopy(self.backbone.hf_model).requires_grad_(False).eval()
            self.reference = [reference.to(self.backbone.compute_dtype)]  # frozen: in dtype, not fp32

    def configure_model(self) -> None:
        """FSDP2 under ``ModelParallelStrategy`` (the reference copy too), fp32 masters under full
        fine-tuning everywhere (:func:`emorl.models.parallel.configure_backbone`); the judge shards
        over the same ranks."""
        configure_backbone(self, [self.reference[0]] if self.reference else None)
        mesh = data_parallel_mesh(self)
        if mesh is not None and self.ptr is not None and hasattr(self.ptr.judge, "shard_over"):
            self.ptr.judge.shard_over(mesh)

    def on_fit_start(self) -> None:
        # without it the policy pass would run in eval mode: no LoRA dropout, no gradient checkpointing
        enter_train_mode(self)

    # -- one rollout --------------------------------------------------------------------------
    def _context(self) -> RewardContext:
        return RewardContext(classes=self.hparams.class_names, alpha=self.alpha, gamma=self.hparams.gamma,
                             strict_answer=self.prompts.format.reading == "strict")

    def _gather(self, values: torch.Tensor) -> torch.Tensor:
        return self.all_gather(values.to(self.device)).reshape(-1).cpu()

    def _rollout(self, batch: dict) -> Rollout:
        hp = self.hparams
        names = hp.class_names
        labels = [names[int(i)] for i in batch["label"]]
        rollout = sample_rollout(
            self.backbone, self.prompts.messages(batch["key"]), clips_from_batch(batch), labels, self.rewards,
            self._context(), self.rollout_options, gather_rewards=self._gather if self.trainer.world_size > 1 else None,
            rows=batch.get("row"), reward_hook=self.ptr.hook_on(self.device) if self.ptr is not None else None,
        )
        start = self._synchronized_clock()
        rows = torch.arange(len(rollout))
        with torch.no_grad():
            if hp.num_iterations > 1:
                rollout.old_logps = self._chunked(rollout, rows)
            if hp.beta > 0:
                with self._reference():
                    rollout.ref_logps = self._chunked(rollout, rows)
        rollout.timings["reference"] = self._synchronized_clock() - start
        return rollout

    @contextlib.contextmanager
    def _reference(self):
        if self.reference is None:
            with self.backbone.adapter_disabled():
                yield
            return
        policy = self.backbone.model
        reference = self.reference[0]
        self.backbone.model = reference if self.backbone.sharded else reference.to(self.device)
        try:
            yield
        finally:
            self.backbone.model = policy

    def _scores(self, rollout: Rollout, rows: torch.Tensor, with_entropy: bool = False):
        """Per-token log-probs (and entropies) of the rollout's answers ``rows``, from its kept prompt
        embeddings (no audio-tower call), under the caller's grad mode."""
        return completion_scores(
            self.backbone, rollout.prompt, rollout.completion_ids[rows], rollout.completion_mask[rows],
            prompt_index=rollout.prompt_index[rows], temperature=self.hparams.temperature, with_entropy=with_entropy,
        )

    def _chunked(self, rollout: Rollout, rows: torch.Tensor) -> torch.Tensor:
        """:meth:`_scores`' log-probs, ``logprob_micro_batch`` answers per forward pass."""
        return torch.cat([self._scores(rollout, chunk)[0] for chunk in rows.split(self.hparams.logprob_micro_batch)])

    # -- the update ---------------------------------------------------------------------------
    def training_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is None:
            return
        self.alpha = alpha_at(self.global_step, max(self.trainer.max_steps, 1), self.hparams.alpha_schedule,
                              self.hparams.alpha_start, self.hparams.alpha_end)
        rollout = self._rollout(batch)
        self.last_rollout = rollout
        self.buffer.append(rollout)
        self._log_rollout(rollout, batch_idx)
        if self.ptr is not None:
            self._observe_ptr(rollout)
        if len(self.buffer) >= self.hparams.accumulate_grad_batches:
            self._update(self.buffer)
            self.buffer = []

    def _update(self, rollouts: list[Rollout]) -> None:
        hp = self.hparams
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        start = time.perf_counter()
        active = sum(float(r.completion_mask.sum()) for r in rollouts)
        global_active = float(self._gather(torch.tensor([active])).sum()) if self.trainer.world_size > 1 else active
        stats: dict[str, list[float]] = {"loss": [], "kl": [], "clip_fraction": [], "entropy": []}
        total_rows = sum(len(r) for r in rollouts)
        seconds = {"policy": 0.0, "optimizer": 0.0}
        for _ in range(hp.num_iterations):
            policy_start = self._synchronized_clock()
            chunks = [(r, rows) for r in rollouts for rows in torch.arange(len(r)).split(hp.logprob_micro_batch)]
            for index, (rollout, rows) in enumerate(chunks):
                with micro_batch_sync(self, last=index == len(chunks) - 1):
                    loss, step_stats = self._micro_loss(rollout, rows, total_rows, global_active)
                    self.manual_backward(loss)
                for key in stats:
                    if key in step_stats:
                        stats[key].append(float(step_stats[key]))
            optimizer_start = self._synchronized_clock()
            seconds["policy"] += optimizer_start - policy_start
            if hp.gradient_clip_val:
                self.clip_gradients(optimizer, gradient_clip_val=hp.gradient_clip_val, gradient_clip_algorithm="norm")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if scheduler is not None:
                scheduler.step()
            seconds["optimizer"] += self._synchronized_clock() - optimizer_start
        values = {f"train/{k}": sum(v) / len(v) for k, v in stats.items() if v}
        values["train/time_update"] = time.perf_counter() - start
        values["train/time_policy"] = seconds["policy"]
        values["train/time_optimizer"] = seconds["optimizer"]
        self.last_update_seconds = seconds
        self.log_dict(values, sync_dist=True, batch_size=1)

    def _synchronized_clock(self) -> float:
        # CUDA kernels run asynchronously: wait for them so each phase is charged its own time
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def _micro_loss(self, rollout: Rollout, rows: torch.Tensor, total_rows: int, global_active: float):
        """One micro-batch's share of the step's loss: its normalised loss weighted by its share of
        the answers (``dapo``: its token sum over the whole step's active tokens, unweighted)."""
        hp = self.hparams
        logps, entropy = self._scores(rollout, rows, with_entropy=True)
        mask = rollout.completion_mask[rows].to(logps.device, logps.dtype)
        old = rollout.old_logps[rows].to(logps.device) if rollout.old_logps is not None else logps.detach()
        ref = rollout.ref_logps[rows].to(logps.device) if rollout.ref_logps is not None else None
        loss, stats = grpo_loss(
            logps, old, rollout.advantages[rows].to(logps.device), mask, ref_logps=ref, beta=hp.beta,
            epsilon=hp.epsilon, epsilon_high=hp.epsilon_high, loss_type=hp.loss_type,
            max_completion_length=hp.max_new_tokens, global_active_tokens=global_active,
            world_size=self.trainer.world_size,
        )
        if hp.loss_type != "dapo":  # dapo's normaliser already spans the whole step
            loss = loss * len(rows) / total_rows
        stats["loss"] = loss.detach()
        stats["entropy"] = (entropy * mask).sum() / mask.sum().clamp(min=1.0)
        return loss, stats

    def _log_rollout(self, rollout: Rollout, batch_idx: int) -> None:
        values = rollout_metrics(rollout, self.alpha, self.prompts.format.matches)
        self.log_dict({k: v.float() for k, v in values.items()}, sync_dist=True, batch_size=1, prog_bar=False)
        if batch_idx % max(self.trainer.log_every_n_steps, 1) == 0:
            rows = [{"key": str(int(i)), "label": label, "prediction": f"reward {float(r):.2f}", "text": text}
                    for i, label, r, text in zip(rollout.prompt_index, rollout.labels, rollout.rewards, rollout.texts)]
            log_answer_samples(self, "train/answers", rows, self.hparams.answers_to_log)

    def _observe_ptr(self, rollout: Rollout) -> None:
        """GRPO-PTR: the switch takes this rollout's accuracy (all ranks); log its state and the judge's."""
        self.ptr.observe(rollout.correct, self._gather if self.trainer.world_size > 1 else None)
        means, counts = self.ptr.log_values()
        self.log_dict(means, sync_dist=True, batch_size=1)
        if counts:
            self.log_dict(counts, sync_dist=True, reduce_fx="sum", batch_size=1)

    def configure_optimizers(self):
        # always a scheduler (factor 1 without warm-up): what GRPO checkpoints have always held
        return adamw_with_warmup(self, self.hparams.lr, self.hparams.weight_decay, self.hparams.warmup_steps,
                                 scheduler_without_warmup=True)

    # -- evaluation ---------------------------------------------------------------------------
    def answer(self, batch: dict):
        """Greedy answers for a DataModule batch: ``(texts, class ids (-1: unparsable), result)``
        (what :mod:`emorl.models.evaluation`'s test / predict bodies call)."""
        return answer_batch(self.backbone, self.prompts, batch, self.hparams.eval_max_new_tokens)

    def validation_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is not None:
            self.metrics.update("val", self.answer(batch)[1].to(self.device), batch["label"])

    def on_validation_epoch_end(self) -> None:
        self.metrics.log_validation(self)

    def test_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> dict | None:
        return test_batch(self, batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.test_results = finish_test(self, self.prompts.format.reading)

    def predict_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        return predict_batch(self, batch, dataloader_idx)

    # -- checkpoints --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep_trainable_weights(self, checkpoint)
        if self.buffer:  # only after an optimiser step is the state complete
            log.warning("checkpoint taken with %d rollout(s) waiting for the optimiser step: a resume "
                        "starts after their batches without them", len(self.buffer))
        checkpoint["emorl_grpo"] = {"alpha": self.alpha, "rng": capture_all_ranks()}
        if self.ptr is not None:
            checkpoint["emorl_ptr"] = self.ptr.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_trainable_weights(self, checkpoint)
        state = checkpoint.get("emorl_grpo", {})
        self.alpha = float(state.get("alpha", self.alpha))
        self._pending_rng = state.get("rng")
        if self.ptr is not None and "emorl_ptr" in checkpoint:
            self.ptr.load_state_dict(checkpoint["emorl_ptr"])

    def on_train_start(self) -> None:
        # the RNGs go back as late as possible, so nothing between loading and the first step draws on them
        pending, self._pending_rng = self._pending_rng, None
        if pending is not None and not restore_this_rank(pending):
            log.warning("the checkpoint's RNG states are for %d rank(s), this run has %d: not restored",
                        len(pending), self.trainer.world_size)

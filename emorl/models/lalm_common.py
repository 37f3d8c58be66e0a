"""What every audio-language-model module shares: prompts per clip, answering, targets, checkpoints.

Plain functions and one small class, composed by :mod:`emorl.models.zeroshot`,
:mod:`emorl.models.sft` and :mod:`emorl.models.grpo`:

- :class:`PromptBuilder`: the chat messages for a batch of clips (format, options, system
  prompt); shuffled options are drawn from a generator seeded by (seed, clip key), so a clip gets
  the same order whatever its batch, rank or run;
- :func:`clips_from_batch`: the DataModule's zero-padded waveforms back to one array per clip;
- :func:`answer_batch`: batched generation and parsing into class ids (-1 = no parsable label,
  which the metrics count as wrong for the true class and report in the parse rate);
- :func:`target_ids`: SFT targets tokenised, ending with the end-of-turn token;
- :func:`keep_trainable_weights`: checkpoints that hold only the trained weights (LoRA adapters,
  a trained projector), about a thousandth of the model;
- :func:`test_batch`, :func:`finish_test`, :func:`predict_batch`: the bodies of every LALM
  module's ``test_step``, ``on_test_epoch_end`` and ``predict_step`` (the module provides
  ``_answer(batch)``, ``metrics`` and ``hparams.answers_to_log``).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch

from emorl.labels import parse_answer
from emorl.lalm.generation import GenerationResult, generate
from emorl.lalm.inputs import build_prompts
from emorl.prompts import (
    DEFAULT_SYSTEM_PROMPT,
    build_messages,
    build_question,
    get_format,
)

END_OF_TURN = "<|im_end|>"


class PromptBuilder:
    """Chat messages for clips: the question listing ``class_names`` and the format's instruction."""

    def __init__(
        self,
        class_names: Sequence[str],
        prompt_format: str = "ir",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        shuffle_options: bool = False,
        seed: int = 0,
    ) -> None:
        self.class_names = list(class_names)
        self.format = get_format(prompt_format)
        self.system_prompt = system_prompt
        self.shuffle_options = shuffle_options
        self.seed = seed

    def _rng(self, key: str) -> random.Random:
        digest = hashlib.sha1(f"{self.seed}|{key}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "little"))

    def question(self, key: str) -> str:
        return build_question(self.format.name, self.class_names, self.shuffle_options, self._rng(key))

    def messages(self, keys: Sequence[str]) -> list[list[dict]]:
        return [build_messages(self.question(key), self.system_prompt) for key in keys]


def clips_from_batch(batch: dict) -> list[np.ndarray]:
    """``batch["wave"]`` (B, T) zero-padded + ``wave_lengths`` -> one float32 array per clip."""
    waves = batch["wave"].detach().float().cpu()
    return [waves[i, : int(n)].numpy() for i, n in enumerate(batch["wave_lengths"].tolist())]


def label_ids(texts: Sequence[str], class_names: Sequence[str]) -> torch.Tensor:
    """Class ids of the labels parsed from ``texts`` (:func:`emorl.labels.parse_answer`), -1 for none."""
    ids = []
    for text in texts:
        label = parse_answer(text, class_names)
        ids.append(class_names.index(label) if label is not None else -1)
    return torch.tensor(ids, dtype=torch.long)


def answer_batch(
    backbone,
    prompts: PromptBuilder,
    batch: dict,
    max_new_tokens: int = 256,
    stop_strings: Sequence[str] | None = ("</answer>",),
) -> tuple[list[str], torch.Tensor, GenerationResult]:
    """Greedy answers for a DataModule batch: ``(texts, class ids (-1: unparsable), result)``."""
    inputs = build_prompts(backbone, prompts.messages(batch["key"]), clips_from_batch(batch))
    result = generate(backbone, inputs, max_new_tokens=max_new_tokens, stop_strings=stop_strings)
    return result.texts, label_ids(result.texts, prompts.class_names), result


def target_ids(tokenizer, targets: Sequence[str], pad_id: int, end_token: str = END_OF_TURN) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise SFT targets (each followed by ``end_token``), right-padded: ``(ids, mask)`` (N, T)."""
    encoded = [tokenizer(text + end_token, add_special_tokens=False)["input_ids"] for text in targets]
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, row in enumerate(encoded):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def trainable_names(module: torch.nn.Module) -> set[str]:
    return {name for name, param in module.named_parameters() if param.requires_grad}


def keep_trainable_weights(module: L.LightningModule, checkpoint: dict) -> None:
    """Drop every frozen weight from a checkpoint's ``state_dict`` (call from ``on_save_checkpoint``).

    The module must set ``self.strict_loading = False`` so that loading such a checkpoint fills
    the trained weights and keeps the frozen ones from the base model.
    """
    keep = trainable_names(module)
    state = checkpoint.get("state_dict", {})
    for key in [k for k in state if k not in keep]:
        del state[key]
    checkpoint["emorl_trainable_keys"] = sorted(keep)


def check_trainable_weights(module: L.LightningModule, checkpoint: dict) -> None:
    """Refuse a checkpoint whose trained weights do not fit this module (call from ``on_load_checkpoint``)."""
    saved = set(checkpoint.get("state_dict", {}))
    expected = trainable_names(module)
    if "emorl_trainable_keys" not in checkpoint:
        return  # a full checkpoint: Lightning loads it as usual
    missing = sorted(expected - saved)
    unknown = sorted(saved - set(dict(module.named_parameters())) - set(dict(module.named_buffers())))
    if missing or unknown:
        raise RuntimeError(
            "the checkpoint's trained weights do not fit this model (different LoRA / projector "
            f"options?): {len(missing)} missing, e.g. {missing[:3]}; {len(unknown)} unknown, e.g. {unknown[:3]}"
        )


def load_trained_weights(module: L.LightningModule, path: str | Path) -> None:
    """Put an emorl checkpoint's trained weights (LoRA, projector, ...) onto ``module``.

    The checkpoint must come from a module with the same trainable weights (same LoRA options,
    projector and full-fine-tuning choices): anything else is refused with a clear error.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"init_checkpoint {path}: no such file")
    state = torch.load(path, map_location="cpu", weights_only=False)
    check_trainable_weights(module, state)
    own = module.state_dict()
    reshaped = [f"{name} {tuple(value.shape)} (here {tuple(own[name].shape)})"
                for name, value in state["state_dict"].items() if name in own and own[name].shape != value.shape]
    if reshaped:  # same names, other LoRA rank: say so before load_state_dict lists every tensor
        raise RuntimeError(f"init_checkpoint {path}: the checkpoint's trained weights do not fit this model "
                           f"(different LoRA rank?): {len(reshaped)} of other shapes, e.g. {reshaped[0]}")
    _, unexpected = module.load_state_dict(state["state_dict"], strict=False)
    if unexpected:
        raise RuntimeError(f"init_checkpoint {path}: unknown weights {unexpected[:3]}")


def log_answer_samples(module: L.LightningModule, tag: str, rows: Sequence[dict], limit: int = 8) -> None:
    """A table of sample answers (key, true label, prediction, text) to every logger (:mod:`emorl.loggers`)."""
    from emorl.loggers import log_table

    trainer = module.trainer
    if not rows or limit <= 0 or not trainer.is_global_zero or not trainer.loggers:
        return
    columns = ["key", "label", "prediction", "answer"]
    table = [[row.get("key"), row.get("label"), row.get("prediction"), row.get("text", "")] for row in rows[:limit]]
    log_table(trainer, tag, columns, table, trainer.global_step)


def test_batch(module: L.LightningModule, batch: dict | None, dataloader_idx: int) -> dict | None:
    """Answer a test batch and add it to the module's metrics (predictions keep the raw text).

    Returns ``{"test_set", "texts", "preds"}`` (the module's ``test_step`` returns it, so callbacks
    such as :class:`emorl.explanations.ExplanationEvaluation` get the answers as ``outputs``).
    """
    if batch is None:
        return None
    name = module.trainer.datamodule.test_names[dataloader_idx]
    texts, preds, _ = module._answer(batch)
    module.metrics.update("test", preds.to(module.device), batch["label"], test_name=name,
                          keys=batch["key"], texts=texts)
    return {"test_set": name, "texts": texts, "preds": preds.tolist()}


def finish_test(module: L.LightningModule) -> dict[str, dict[str, float]]:
    """Sample answers to TensorBoard, then every test set's scores, figure and predictions file."""
    for name in module.metrics.test_order:
        log_answer_samples(module, f"test/{name}/answers", module.metrics.predictions.get(name, []),
                           module.hparams.answers_to_log)
    return module.metrics.log_test(module)


def predict_batch(module: L.LightningModule, batch: dict | None, dataloader_idx: int) -> list[dict]:
    """One JSON-ready row per clip: its set, key, predicted emotion (``None``: unparsable) and text."""
    if batch is None:
        return []
    texts, preds, _ = module._answer(batch)
    names = module.hparams.class_names
    datamodule = module.trainer.datamodule
    sets = getattr(datamodule, "predict_names", None) or getattr(datamodule, "test_names", None) or ["predict"]
    return [
        {"test_set": sets[dataloader_idx], "key": key, "emotion": names[int(p)] if int(p) >= 0 else None,
         "text": text}
        for key, p, text in zip(batch["key"], preds, texts)
    ]


def enter_train_mode(module: L.LightningModule) -> None:
    """Train mode for what is trained (backbones load in eval mode), so that dropout and gradient
    checkpointing (which transformers applies in train mode only) act; a frozen audio tower stays off."""
    module.model.train()
    if not any(p.requires_grad for p in module.backbone.audio_tower.parameters()):
        module.backbone.audio_tower.eval()

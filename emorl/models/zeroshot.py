"""Zero-shot SER with an audio-language model: EMO-RL Table 1's "Direct Inference" / "CoT Inference".

    emorl test --config configs/lalm/qwen2_audio_zeroshot_direct.yaml
    emorl test --config configs/lalm/qwen2_audio_zeroshot_cot.yaml --data.data_dir data/iemocap

Nothing is trained: ``emorl test`` (and ``validate`` / ``predict``) run directly from the config,
without ``--ckpt_path``. Each clip is asked the format's question with the corpus's emotion
options; the answer is parsed (:func:`emorl.labels.parse_answer`, in the format's reading: lenient
for ``direct`` / ``cot``, a label named anywhere counts, marked ``*`` in the results table; strict
for the tagged formats; ``answer_reading`` overrides it) and scored with UA / WA / F1;
an answer with no parsable label counts as wrong for its true class and lowers the parse rate,
both logged per test set. Each test set's predictions (key, true label, predicted label, raw
text) go to ``<log_dir>/predictions/<test set>.jsonl`` and a table of sample answers to
TensorBoard (``test/<test set>/answers``).
"""

from __future__ import annotations

import lightning as L
import torch

from emorl.lalm import load_backbone
from emorl.lalm.answers import answer_batch
from emorl.models.evaluation import StageMetrics, check_reading, finish_test, predict_batch, test_batch
from emorl.prompts import DEFAULT_SYSTEM_PROMPT, PromptBuilder


class ZeroShotLALM(L.LightningModule):
    """An audio-language model answering emotion questions as it is (no training).

    Args:
        class_names: the emotion options (linked from the DataModule's label set).
        model: a zoo name (``qwen2-audio-7b-instruct``, ``qwen2.5-omni-7b-thinker``) or a folder.
        prompt_format: ``direct`` or ``cot`` (any :data:`emorl.prompts.FORMATS` name works).
        system_prompt: the system turn (``null``: none, the template's default applies).
        shuffle_options: list the options in a per-clip seeded random order (position bias).
        prompt_seed: seed of that order.
        max_new_tokens: answer length limit (direct answers need few; CoT a few hundred).
        stop_strings: generation stops once the answer contains one (besides end-of-turn).
        dtype / attn_implementation: how the backbone is loaded (``bfloat16`` + ``sdpa`` or
            ``flash_attention_2`` on GPUs; ``float32`` on CPUs).
        answers_to_log: sample answers per test set written to TensorBoard.
        answer_reading: how answers are read for a label (:func:`emorl.labels.parse_answer`):
            ``strict`` (the ``<answer>`` block only, naming one option) or ``lenient`` (a label
            named anywhere); ``null``: the format's own (lenient for ``direct`` / ``cot``).
    """

    def __init__(
        self,
        class_names: list[str],
        model: str = "qwen2-audio-7b-instruct",
        prompt_format: str = "direct",
        system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
        shuffle_options: bool = False,
        prompt_seed: int = 0,
        max_new_tokens: int = 256,
        stop_strings: list[str] | None = None,
        dtype: str = "bfloat16",
        attn_implementation: str | None = "sdpa",
        answers_to_log: int = 16,
        answer_reading: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.prompts = PromptBuilder(class_names, prompt_format, system_prompt, shuffle_options, prompt_seed)
        self.reading = check_reading(answer_reading or self.prompts.format.reading)
        self.backbone = load_backbone(model, dtype=dtype, attn_implementation=attn_implementation)
        self.model = self.backbone.model  # registered, so Lightning moves it to the device
        self.stop_strings = list(stop_strings) if stop_strings is not None else ["</answer>"]
        self.metrics = StageMetrics(class_names)
        self.test_results: dict[str, dict[str, float]] = {}

    def answer(self, batch: dict):
        """Greedy answers for a DataModule batch: ``(texts, class ids (-1: unparsable), result)``, read
        in ``answer_reading`` (default: the format's) (what :mod:`emorl.models.evaluation`'s test / predict bodies call)."""
        return answer_batch(self.backbone, self.prompts, batch, self.hparams.max_new_tokens, self.stop_strings,
                            reading=self.reading)

    def validation_step(self, batch: dict | None, batch_idx: int) -> None:
        if batch is None:
            return
        _, preds, _ = self.answer(batch)
        self.metrics.update("val", preds.to(self.device), batch["label"])

    def on_validation_epoch_end(self) -> None:
        self.metrics.log_validation(self)

    def test_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> dict | None:
        return test_batch(self, batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.test_results = finish_test(self, self.reading)

    def predict_step(self, batch: dict | None, batch_idx: int, dataloader_idx: int = 0) -> list[dict]:
        return predict_batch(self, batch, dataloader_idx)

    def configure_optimizers(self) -> None:
        raise RuntimeError("ZeroShotLALM is not trained: use `emorl test` / `validate` / `predict`")

    def forward(self, batch: dict) -> torch.Tensor:
        return self.answer(batch)[1]

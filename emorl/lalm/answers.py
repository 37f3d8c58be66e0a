"""From a DataModule batch to answers and targets: waveforms per clip, greedy answers parsed into
class ids, SFT targets tokenised.

- :func:`clips_from_batch`: the DataModule's zero-padded waveforms back to one array per clip;
- :func:`answer_batch`: batched generation and parsing into class ids (-1 = no parsable label,
  which the metrics count as wrong for the true class and report in the parse rate);
- :func:`label_ids`: answers' texts -> class ids;
- :func:`target_ids`: SFT targets tokenised, each ending with the end-of-turn token.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from emorl.labels import parse_answer
from emorl.lalm.generation import GenerationResult, generate
from emorl.lalm.inputs import build_prompts
from emorl.prompts import PromptBuilder

END_OF_TURN = "<|im_end|>"


def clips_from_batch(batch: dict) -> list[np.ndarray]:
    """``batch["wave"]`` (B, T) zero-padded + ``wave_lengths`` -> one float32 array per clip."""
    waves = batch["wave"].detach().float().cpu()
    return [waves[i, : int(n)].numpy() for i, n in enumerate(batch["wave_lengths"].tolist())]


def label_ids(texts: Sequence[str], class_names: Sequence[str], reading: str = "strict") -> torch.Tensor:
    """Class ids of the labels :func:`emorl.labels.parse_answer` reads from ``texts`` in ``reading``
    (``strict`` for the tagged formats IR / EUR / ESR, as the training reward reads them; ``lenient``
    for the zero-shot ``direct`` / ``cot``), -1 for none."""
    names = list(class_names)
    labels = [parse_answer(text, names, reading=reading) for text in texts]
    return torch.tensor([names.index(label) if label is not None else -1 for label in labels], dtype=torch.long)


def answer_batch(
    backbone,
    prompts: PromptBuilder,
    batch: dict,
    max_new_tokens: int = 256,
    stop_strings: Sequence[str] | None = ("</answer>",),
    reading: str | None = None,
) -> tuple[list[str], torch.Tensor, GenerationResult]:
    """Greedy answers for a DataModule batch: ``(texts, class ids (-1: unparsable), result)``, the
    labels read in ``reading`` (default: the prompt format's, :attr:`emorl.prompts.PromptFormat.reading`)."""
    inputs = build_prompts(backbone, prompts.messages(batch["key"]), clips_from_batch(batch))
    result = generate(backbone, inputs, max_new_tokens=max_new_tokens, stop_strings=stop_strings)
    return result.texts, label_ids(result.texts, prompts.class_names, reading or prompts.format.reading), result


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

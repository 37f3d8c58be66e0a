"""A local text-only causal LM given by path: rationale writer (``emorl data cot``) and judge (GRPO-PTR).

Any Hugging Face causal LM folder with a tokenizer works (an instruction-tuned one with a chat
template is what these jobs expect: Qwen2.5-7B-Instruct, Llama-3.1-8B-Instruct, ...). Nothing is
downloaded: ``path`` must be a local folder. :func:`build_tiny_text_lm` writes a tiny random
``Qwen2ForCausalLM`` with emorl's tiny tokenizer and the Qwen chat template, for tests.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from emorl.lalm.backbone import DTYPES
from emorl.lalm.sharding import unsharded

Messages = list[dict]


class TextLM:
    """A causal LM and its tokenizer, answering chat prompts in batches.

    Args:
        path: local model folder (``config.json``, weights, tokenizer files).
        dtype: ``float32`` | ``bfloat16`` | ``float16``.
        device: where to run it (``cpu``, ``cuda``, ``cuda:1``...).
    """

    def __init__(self, path: str | os.PathLike, dtype: str = "bfloat16", device: str | torch.device = "cpu") -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"no causal LM at {folder} (expected a local folder with config.json)")
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
        self.path = folder
        self.dtype = DTYPES[dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"  # batched generation continues every row from its end
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype]).to(device).eval()
        self.model.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> TextLM:
        from emorl.lalm.sharding import is_sharded

        if not is_sharded(self.model):  # a sharded model stays on its ranks' devices
            self.model.to(device)
        return self

    def shard(self, mesh) -> TextLM:
        """FSDP2 over the 1-D ``mesh`` (per decoder layer, embeddings, final norm, head; frozen,
        computing in the loaded dtype): each rank holds 1/N of the weights; :meth:`generate` then
        gathers them once per call (a collective: every rank of ``mesh`` calls it together)."""
        from emorl.lalm.sharding import shard_model

        shard_model(self.model, mesh, self.dtype)
        return self

    def render(self, messages: Messages) -> str:
        """The prompt text of one conversation (chat template when the tokenizer has one)."""
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(str(m["content"]) for m in messages) + "\n\n"

    @torch.no_grad()
    def generate(
        self,
        conversations: Sequence[Messages],
        max_new_tokens: int = 256,
        batch_size: int = 8,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[str]:
        """One reply per conversation (greedy when ``temperature`` is 0), ``batch_size`` at a time."""
        from transformers import GenerationConfig

        if seed is not None:
            torch.manual_seed(seed)
        eos = [i for i in {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")}
               if isinstance(i, int) and i >= 0 and i != self.tokenizer.unk_token_id]
        config = GenerationConfig(
            max_new_tokens=int(max_new_tokens), do_sample=temperature > 0,
            temperature=float(temperature) if temperature > 0 else None, top_p=None, top_k=None,
            eos_token_id=eos or None, pad_token_id=self.tokenizer.pad_token_id,
        )
        with unsharded(self.model):  # sharded: gathered once for every batch of this call
            return self._generate(conversations, config, batch_size)

    def _generate(self, conversations: Sequence[Messages], config, batch_size: int) -> list[str]:
        replies: list[str] = []
        for start in range(0, len(conversations), max(int(batch_size), 1)):
            texts = [self.render(m) for m in conversations[start : start + batch_size]]
            encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            encoded = {k: v.to(self.device) for k, v in encoded.items()}
            output = self.model.generate(**encoded, generation_config=config)
            new = output[:, encoded["input_ids"].shape[1]:]
            replies += [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return replies


def build_tiny_text_lm(out: str | os.PathLike, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    """A tiny random ``Qwen2ForCausalLM`` with emorl's tiny tokenizer and chat template (tests only)."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from emorl.lalm.tiny import train_tokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = train_tokenizer("qwen2-audio")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config)
    end, pad = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config = GenerationConfig(eos_token_id=[end, pad], pad_token_id=pad, bos_token_id=pad)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

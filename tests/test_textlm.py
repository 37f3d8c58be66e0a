"""The local text LM wrapper (rationale writer / judge): batching, prompts, errors."""

import pytest

from emorl.textlm import TextLM, build_tiny_text_lm


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return TextLM(build_tiny_text_lm(tmp_path_factory.mktemp("textlm"), hidden_size=32), dtype="float32")


def test_batched_greedy_replies_equal_one_at_a_time(tiny_lm):
    conversations = [[{"role": "user", "content": text}] for text in
                     ("happy", "The pitch is high and the voice is loud, rate it", "sad sad")]
    batched = tiny_lm.generate(conversations, max_new_tokens=6, batch_size=3)
    single = [tiny_lm.generate([c], max_new_tokens=6)[0] for c in conversations]
    assert batched == single
    assert len(batched) == 3 and any(batched)


def test_render_uses_the_chat_template(tiny_lm):
    text = tiny_lm.render([{"role": "system", "content": "judge"}, {"role": "user", "content": "hi"}])
    assert text.startswith("<|im_start|>system\njudge<|im_end|>") and text.endswith("<|im_start|>assistant\n")


def test_missing_folder_and_bad_dtype_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no causal LM"):
        TextLM(tmp_path / "nowhere")
    build_tiny_text_lm(tmp_path / "lm")
    with pytest.raises(ValueError, match="unknown dtype"):
        TextLM(tmp_path / "lm", dtype="float8")

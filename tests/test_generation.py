"""Batched generation: audio tower once per clip, left padding = alone, stop strings, log-prob reuse."""

from __future__ import annotations

import pytest
import torch

from emorl.lalm import build_prompts, completion_scores, cut_at_stop, embed_prompts, generate, load_backbone
from emorl.lalm.generation import postprocess
from emorl.lalm.inputs import position_ids
from tests.lalm_fixtures import FAMILIES, clips, messages, tiny_model_dir

_BACKBONES: dict = {}


def backbone_of(family):
    if family not in _BACKBONES:
        _BACKBONES[family] = load_backbone(tiny_model_dir(family))
    return _BACKBONES[family]


class TowerCounter:
    """Counts audio-tower forward calls and the clips each call processed."""

    def __init__(self, backbone):
        self.calls, self.clips = 0, 0
        self.family = backbone.family
        self.handle = backbone.audio_tower.register_forward_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs, output):
        self.calls += 1
        if self.family == "qwen2-audio":
            self.clips += int((args[0] if args else kwargs["input_features"]).shape[0])
        else:  # Omni's tower takes the clips' frames concatenated, with one length per clip
            self.clips += int(kwargs["feature_lens"].shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_audio_tower_runs_once_per_clip(family):
    backbone = backbone_of(family)
    batch = build_prompts(backbone, messages(3), clips((1.0, 2.5, 0.6)))
    with TowerCounter(backbone) as counter:
        result = generate(backbone, batch, max_new_tokens=6)
    assert (counter.calls, counter.clips) == (1, 3)
    assert len(result.texts) == 3
    # G samples per prompt: the embeddings are repeated, the tower still sees each clip once
    with TowerCounter(backbone) as counter:
        sampled = generate(backbone, batch, max_new_tokens=5, do_sample=True, temperature=1.0, top_p=0.9,
                           num_return_sequences=4, seed=0)
    assert (counter.calls, counter.clips) == (1, 3)
    assert sampled.completion_ids.shape[0] == 12 and len(sampled.texts) == 12
    assert sampled.prompt_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # log-probs reuse the prompt embeddings: no tower call at all
    with TowerCounter(backbone) as counter, torch.no_grad():
        completion_scores(backbone, sampled.prompt, sampled.completion_ids, sampled.completion_mask,
                          prompt_index=sampled.prompt_index)
    assert counter.calls == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_in_a_batch_equals_alone(family):
    backbone = backbone_of(family)
    batch = build_prompts(backbone, messages(3), clips((1.0, 2.5, 0.6)))
    assert (batch.attention_mask == 0).any()  # really padded
    together = generate(backbone, batch, max_new_tokens=10, stop_strings=())
    for i in range(3):
        alone = generate(backbone, build_prompts(backbone, messages(3)[i:i + 1], clips((1.0, 2.5, 0.6))[i:i + 1]),
                         max_new_tokens=10, stop_strings=())
        assert alone.texts[0] == together.texts[i]
        assert torch.equal(alone.completion_ids[0], together.completion_ids[i])
    assert together.prompt_lengths.tolist() == batch.attention_mask.sum(-1).tolist()
    assert together.truncated.all() and (together.completion_lengths == 10).all()


def test_greedy_needs_one_sequence_per_prompt():
    backbone = backbone_of("qwen2-audio")
    batch = build_prompts(backbone, messages(1), clips((1.0,)))
    with pytest.raises(ValueError, match="do_sample"):
        generate(backbone, batch, num_return_sequences=2)


def test_stop_strings_cut_the_text_and_the_mask():
    backbone = backbone_of("qwen2-audio")
    tok = backbone.tokenizer
    pad = backbone.pad_token_id
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    answer = tok("<think>sad voice</think><answer>sad</answer> and more words").input_ids
    with_eos = tok("<answer>happy").input_ids + [im_end, pad, pad]
    neither = tok("<answer>hap").input_ids
    width = max(len(answer), len(with_eos), len(neither))
    rows = [r + [pad] * (width - len(r)) for r in (answer, with_eos, neither)]
    rows[2] = neither + tok(" py py py py py py py py py py py").input_ids[: width - len(neither)]
    texts, ids, mask, truncated = postprocess(backbone, torch.tensor(rows), ("</answer>",))
    assert texts[0] == "<think>sad voice</think><answer>sad</answer>"
    stop_at = int(mask[0].sum())
    assert "</answer>" in tok.decode(rows[0][:stop_at]) and "</answer>" not in tok.decode(rows[0][:stop_at - 1])
    assert (ids[0, stop_at:] == pad).all()
    assert texts[1] == "<answer>happy" and int(mask[1].sum()) == len(with_eos) - 2  # eos kept, pads not
    assert truncated.tolist() == [False, False, True] and int(mask[2].sum()) == width
    assert cut_at_stop("a</b> c</a> d", ("</a>", "</b>")) == "a</b>"


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_stops_at_a_stop_string(family):
    backbone = backbone_of(family)
    batch = build_prompts(backbone, messages(2), clips((1.0, 0.6)))
    free = generate(backbone, batch, max_new_tokens=12, stop_strings=())
    text = free.texts[0]
    stop = next(text[i:i + 2] for i in range(2, len(text) - 2) if text[i:i + 2].strip() and text[i:i + 2].isprintable())
    stopped = generate(backbone, batch, max_new_tokens=12, stop_strings=(stop,))
    assert stopped.texts[0] == text[: text.index(stop) + len(stop)]
    n = int(stopped.completion_mask[0].sum())
    assert not stopped.truncated[0] and n < 12
    assert torch.equal(stopped.completion_ids[0, :n], free.completion_ids[0, :n])


def test_the_stop_string_criterion_is_built_once_per_tokenizer(monkeypatch):
    # transformers would walk the whole vocabulary on every generate() call (~1.4 s at 151k tokens)
    import transformers

    from emorl.lalm.generation import _STOP_CRITERIA

    backbone = backbone_of("qwen2-audio")
    _STOP_CRITERIA.pop(backbone.tokenizer, None)
    built = []
    original = transformers.StopStringCriteria.__init__

    def counting_init(self, *args, **kwargs):
        built.append(kwargs.get("stop_strings"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(transformers.StopStringCriteria, "__init__", counting_init)
    batch = build_prompts(backbone, messages(2), clips((1.0, 0.6)))
    first = generate(backbone, batch, max_new_tokens=6, stop_strings=("</answer>",))
    second = generate(backbone, batch, max_new_tokens=6, stop_strings=("</answer>",))
    generate(backbone, batch, max_new_tokens=6, stop_strings=("</think>",))
    assert built == [["</answer>"], ["</think>"]]
    assert first.texts == second.texts


def test_the_token_end_filter_gives_the_full_stop_string_check():
    from transformers import StopStringCriteria

    from emorl.lalm.generation import stop_string_criteria

    tokenizer = backbone_of("qwen2-audio").tokenizer
    stops = ("</answer>", "</think>")
    full = StopStringCriteria(tokenizer=tokenizer, stop_strings=list(stops))
    filtered = stop_string_criteria(tokenizer, stops)
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, len(tokenizer), (12,), generator=generator) for _ in range(200)]
    for text in ("so the answer is <answer>happy</answer>", "<think>calm</think>", "</answer", "x</answer>>"):
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
        rows.append(torch.cat([torch.randint(0, len(tokenizer), (12,), generator=generator), ids])[-12:])
    for pieces in (["</", "ans", "wer", ">"], ["</answer", ">"]):  # the same text, other tokenizations
        ids = [i for p in pieces for i in tokenizer(p, add_special_tokens=False)["input_ids"]]
        rows.append(torch.tensor(([0] * 12 + ids)[-12:]))
    batch = torch.stack(rows)
    expected = full(batch, None)
    assert 3 <= int(expected.sum()) < len(rows)
    assert torch.equal(filtered(batch, None), expected)
    for row in batch:  # one row at a time too: the skip path returns False
        assert bool(filtered(row[None], None)[0]) == bool(full(row[None], None)[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_log_probs_from_reused_embeddings_equal_a_normal_forward(family):
    backbone = backbone_of(family)
    batch = build_prompts(backbone, messages(3), clips((1.0, 2.5, 0.6)))
    result = generate(backbone, batch, max_new_tokens=6, do_sample=True, num_return_sequences=2, seed=1,
                      stop_strings=())
    with torch.no_grad():
        reused = completion_scores(backbone, result.prompt, result.completion_ids, result.completion_mask,
                                   prompt_index=result.prompt_index)[0]
        # the model's own path: input_ids + input_features, the merge done inside its forward
        rows = result.prompt_index
        ids = torch.cat([batch.input_ids[rows], result.completion_ids], dim=1)
        mask = torch.cat([batch.attention_mask[rows], result.completion_mask], dim=1)
        out = backbone.hf_model(input_ids=ids, attention_mask=mask, input_features=batch.input_features[rows],
                                feature_attention_mask=batch.feature_attention_mask[rows],
                                position_ids=position_ids(mask))
        length = batch.input_ids.shape[1]
        logp = torch.log_softmax(out.logits[:, length - 1:-1].float(), -1)
        expected = logp.gather(-1, result.completion_ids.unsqueeze(-1)).squeeze(-1) * result.completion_mask
    assert torch.allclose(reused, expected, atol=1e-5)
    # and the embeddings are the model's merge: same prompt logits as the normal forward
    with torch.no_grad():
        embeds = embed_prompts(backbone, batch)
        a = backbone.hf_model(inputs_embeds=embeds.inputs_embeds, attention_mask=embeds.attention_mask,
                              position_ids=position_ids(embeds.attention_mask)).logits
        b = backbone.hf_model(**batch.model_inputs(), position_ids=position_ids(batch.attention_mask)).logits
    keep = batch.attention_mask.bool()
    assert torch.allclose(a[keep], b[keep], atol=1e-5)


def test_log_probs_carry_gradients_to_the_adapters():
    backbone = load_backbone(tiny_model_dir("qwen2.5-omni"), lora={"r": 2})
    batch = build_prompts(backbone, messages(2), clips((1.0, 0.6)))
    result = generate(backbone, batch, max_new_tokens=4, stop_strings=())
    prompt = result.prompt.detach()
    logp = completion_scores(backbone, prompt, result.completion_ids, result.completion_mask)[0]
    logp.sum().backward()
    grads = [p.grad for name, p in backbone.trainable_parameters() if "lora_B" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    with backbone.adapter_disabled(), torch.no_grad():
        reference = completion_scores(backbone, prompt, result.completion_ids, result.completion_mask)[0]
    assert torch.allclose(reference, logp.detach(), atol=1e-5)  # lora_B is still zero: same model

"""The model card (``README.md``) of an exported folder: front matter, results, recipe, prompt, snippet.

Front matter (Hugging Face's model-card metadata): ``base_model`` (the zoo card's hub id),
``license`` (the zoo card's licence), ``library_name``, ``pipeline_tag``, ``tags``, ``datasets``,
``metrics`` and a ``model-index`` whose values are the run's ``test_results.json`` (percent).
The snippet uses transformers only and is the code the round-trip test runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import yaml

from emorl.prompts import ESR_TAGS, build_question, get_format

#: test_results.json score -> (model-index metric type, display name).
CARD_METRICS = {"ua": ("unweighted_accuracy", "UA"), "wa": ("accuracy", "WA"), "f1": ("f1", "macro F1"),
                "parse_rate": ("parse_rate", "parse rate")}
SNIPPET_CALL = 'print(recognise("speech.wav"))'


@dataclass
class CardFacts:
    """Everything the card states, gathered by the export."""

    name: str
    family: str
    base_model: str
    license: str
    method: str
    prompt_format: str
    class_names: list[str]
    system_prompt: str | None
    max_new_tokens: int
    config_text: str
    adapter: bool = False
    results: dict | None = None
    datasets: list[str] = field(default_factory=list)


def question_text(facts: CardFacts) -> str:
    """The user turn's text the model was trained on (options in the label set's order)."""
    return build_question(facts.prompt_format, facts.class_names)


def front_matter(facts: CardFacts) -> str:
    """The YAML block between ``---`` lines."""
    tags = ["emorl", "speech-emotion-recognition", "audio", facts.family, facts.method.split(",")[0].lower()]
    meta = {
        "base_model": facts.base_model,
        "license": facts.license.lower(),
        "library_name": "peft" if facts.adapter else "transformers",
        "pipeline_tag": "audio-text-to-text",
        "tags": tags,
        "datasets": facts.datasets,
        "metrics": [m for m, _ in CARD_METRICS.values() if m != "parse_rate"],
    }
    test_sets = (facts.results or {}).get("test_sets") or {}
    if test_sets:
        meta["model-index"] = [{"name": facts.name, "results": [
            {"task": {"type": "audio-classification", "name": "Speech emotion recognition"},
             "dataset": {"name": name, "type": name},
             "metrics": [{"type": CARD_METRICS[k][0], "name": CARD_METRICS[k][1], "value": round(100 * v, 2)}
                         for k, v in scores.items() if k in CARD_METRICS and v is not None]}
            for name, scores in test_sets.items()]}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def results_section(facts: CardFacts) -> str:
    """The test results as a table (percent), with where they come from."""
    record = facts.results or {}
    test_sets = record.get("test_sets") or {}
    if not test_sets:
        return "## Results\n\nNo test results were recorded for this checkpoint (run `emorl test`).\n"
    lines = ["## Results", "", f"From `test_results.json` of `{record.get('run_dir')}` (checkpoint "
             f"`{record.get('checkpoint')}`), in percent:", "", "| test set | UA | WA | macro F1 | parse rate |",
             "| --- | --- | --- | --- | --- |"]
    for name, s in test_sets.items():
        cells = [f"{100 * s[k]:.2f}" if s.get(k) is not None else "-" for k in ("ua", "wa", "f1", "parse_rate")]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def prompt_section(facts: CardFacts) -> str:
    """System prompt, question, answer format and how the label is read out of an answer."""
    fmt = get_format(facts.prompt_format)
    shape = {"ir": "<answer>LABEL</answer>", "eur": "<think>reasoning</think><answer>LABEL</answer>",
             "esr": "<think>" + "".join(f"<{t}>...</{t}>" for t in ESR_TAGS) + "</think><answer>LABEL</answer>"}
    return "\n".join([
        "## Prompt", "",
        "One chat turn: the clip (mono, 16 kHz) then the question listing the options, after the system prompt.",
        "", f"- system prompt: `{facts.system_prompt}`" if facts.system_prompt else "- no system prompt",
        f"- options: {', '.join(facts.class_names)}",
        f"- answer format (`{fmt.name}`): `{shape.get(fmt.name, 'free text naming one option')}`",
        "", "The question (the user turn's text, after the audio):", "", "```text", question_text(facts), "```", "",
        "Reading the label: take the last `<answer>...</answer>` block and the first option (or synonym) named "
        "inside it; without a block, the single option the text names. An answer naming none counts as wrong "
        "(emorl's `parse_answer` and `parse_rate`). Greedy decoding, stopping after `</answer>`, "
        f"{facts.max_new_tokens} new tokens at most.", ""])


def snippet(facts: CardFacts, model_id: str) -> str:
    """A transformers-only script that answers for one 16 kHz wav file (the card's snippet)."""
    messages = []
    if facts.system_prompt:
        messages.append({"role": "system", "content": [{"type": "text", "text": facts.system_prompt}]})
    messages.append({"role": "user", "content": [{"type": "audio", "audio": "speech.wav"},
                                                 {"type": "text", "text": question_text(facts)}]})
    load = ADAPTER_LOAD if facts.adapter else MERGED_LOAD
    inputs = OMNI_INPUTS if facts.family == "qwen2.5-omni" else QWEN2_AUDIO_INPUTS
    cls = "Qwen2_5OmniThinkerForConditionalGeneration" if facts.family == "qwen2.5-omni" else \
        "Qwen2AudioForConditionalGeneration"
    head = SNIPPET_HEAD.format(cls=cls, model_id=model_id, base=facts.base_model, options=json.dumps(facts.class_names),
                               messages=json.dumps(messages, ensure_ascii=False),
                               max_new_tokens=facts.max_new_tokens)
    return head + load.format(cls=cls, base=facts.base_model) + inputs + SNIPPET_TAIL + SNIPPET_CALL + "\n"


SNIPPET_HEAD = '''import json
import re

import soundfile as sf
import torch
from transformers import AutoTokenizer, {cls}

MODEL = "{model_id}"
OPTIONS = {options}
MESSAGES = json.loads({messages!r})
MAX_NEW_TOKENS = {max_new_tokens}
'''
MERGED_LOAD = '''model = {cls}.from_pretrained(MODEL, dtype="auto").eval()
'''
ADAPTER_LOAD = '''from peft import PeftModel

BASE = "{base}"  # the base model the adapter was trained on (hub id or local folder)
model = PeftModel.from_pretrained({cls}.from_pretrained(BASE, dtype="auto"), MODEL).eval()
'''
QWEN2_AUDIO_INPUTS = '''
from transformers import AutoProcessor

processor = AutoProcessor.from_pretrained(MODEL)
tokenizer = processor.tokenizer


def model_inputs(audio):
    text = processor.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return processor(text=text, audio=[audio], sampling_rate=16000, return_tensors="pt")
'''
OMNI_INPUTS = '''
# AutoProcessor.from_pretrained(MODEL) gives transformers' Qwen2_5OmniProcessor where torchvision is
# installed (its video processor needs it); the audio path below needs neither it nor torchvision.
from transformers import WhisperFeatureExtractor

features = WhisperFeatureExtractor.from_pretrained(MODEL)
tokenizer = AutoTokenizer.from_pretrained(MODEL)


def model_inputs(audio):
    audio_inputs = features(audio, sampling_rate=16000, padding="max_length", return_attention_mask=True,
                            return_tensors="pt")
    frames = int(audio_inputs["attention_mask"].sum())
    tokens = ((frames - 1) // 2 + 1 - 2) // 2 + 1  # audio tokens: encoder stride 2, then pooling 2
    text = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    encoded = tokenizer(text.replace("<|AUDIO|>", "<|AUDIO|>" * tokens), return_tensors="pt")
    return {**encoded, "input_features": audio_inputs["input_features"],
            "feature_attention_mask": audio_inputs["attention_mask"]}
'''
SNIPPET_TAIL = '''

def recognise(wav_path):
    """The model's answer for a mono 16 kHz wav file, and the emotion read out of it."""
    audio, rate = sf.read(wav_path, dtype="float32")
    assert rate == 16000 and audio.ndim == 1, "resample to mono 16 kHz first"
    inputs = model_inputs(audio)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, repetition_penalty=1.0,
                             stop_strings=["</answer>"], tokenizer=tokenizer)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    if "</answer>" in answer:
        answer = answer[: answer.index("</answer>") + len("</answer>")]
    blocks = re.findall(r"<answer>(.*?)</answer>", answer, re.S | re.I)
    span = (blocks[-1] if blocks else answer).lower()
    named = [o for o in OPTIONS if re.search(rf"\\b{re.escape(o)}\\b", span)]
    return answer, (min(named, key=span.index) if named else None)


'''


def model_card(facts: CardFacts, model_id: str) -> str:
    """The whole ``README.md``."""
    kind = "a PEFT LoRA adapter for" if facts.adapter else "a fine-tuned"
    return "\n".join([
        front_matter(facts),
        f"# {facts.name}", "",
        f"Speech emotion recognition: {kind} `{facts.base_model}` trained with emorl ({facts.method}). "
        f"It hears a clip and answers with one of {len(facts.class_names)} emotions.", "",
        results_section(facts), prompt_section(facts),
        "## Use with transformers", "",
        "Needs `transformers`, `torch` and `soundfile`" + (" and `peft`" if facts.adapter else "") + ".", "",
        "```python", snippet(facts, model_id).rstrip(), "```", "",
        "## Training recipe", "", "The emorl config of the run (`emorl fit --config ...`):", "",
        "```yaml", facts.config_text.rstrip(), "```", ""])


def extract_snippet(card: str) -> str:
    """The python code block of a card (what the round-trip test runs)."""
    start = card.index("```python\n") + len("```python\n")
    return card[start: card.index("```", start)]

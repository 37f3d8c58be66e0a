"""`emorl data cot`: template and LM rationales, the filter and its counts, the manifest, SFT targets."""

import itertools
import json
import random

import pytest

from emorl.cli import main
from emorl.data.cot import (
    REJECTIONS,
    clean_rationale,
    ends_in_label,
    last_sentence,
    lm_messages,
    rejection,
    template_rationale,
    training_rows,
    write_rationales,
)
from emorl.data.manifest import fold_path, load_prepared_corpus, read_manifest, update_rows
from emorl.models.sft import sft_target
from emorl.prompts import get_format, target_text
from emorl.prosody.claims import extract_claims, faithfulness
from emorl.textlm import TextLM, build_tiny_text_lm
from tests.corpus_factory import make_tiny_corpus

LABELS = ("neutral", "happy", "sad", "angry")
LEVELS = ("low", "normal", "high", "unknown")
TRANSCRIPTS = ("Slow down, please, I said it is too loud!", "I am so happy and quiet today.",
               'He said "stop" and left.', "", "Why would you do this to me?", "fast fast fast",
               "I'm not sad, I'm furious.")
BINS = {"pitch": "high", "energy": "low", "rate": "normal", "pitch_slope": "high", "pitch_range": "low",
        "energy_variability": "high", "pauses": "low", "hnr": "low", "jitter": "high", "shimmer": "normal"}


def _row(key, label, bins, transcript="I cannot believe it!", slope=2.0, pause_count=1):
    measures = {"pitch_mean_hz": 200.0, "pitch_slope_st_s": slope, "energy_mean_db": -22.0, "rate_syl_s": 4.0,
                "pause_count": pause_count, "pause_ratio": 0.1}
    return {"key": key, "label": label, "transcript": transcript,
            "prosody": {"bins": bins, "measures": measures, "caption": "pitch: high"}}


# -- the template writer ---------------------------------------------------------------------------
def test_template_ends_in_the_gold_label_and_says_exactly_the_bins_over_many_rows():
    rng = random.Random(0)
    others = ("pitch_slope", "pitch_range", "energy_variability", "pauses", "hnr", "jitter", "shimmer")
    texts = set()
    for n, (pitch, energy, rate) in enumerate(itertools.product(LEVELS, repeat=3)):
        for rep in range(4):
            bins = {"pitch": pitch, "energy": energy, "rate": rate, **{k: rng.choice(LEVELS) for k in others}}
            label = rng.choice(LABELS)
            row = _row(f"k{n}-{rep}", label, bins, rng.choice(TRANSCRIPTS), slope=rng.choice((-3.0, 0.0, 3.0)),
                       pause_count=rng.choice((0, 2)))
            text = template_rationale(row, label, seed=rep)
            texts.add(text)
            assert ends_in_label(text, label, LABELS), text
            assert rejection(text, label, LABELS, bins) is None, text
            said = sorted((c.dimension, c.level) for c in extract_claims(text))
            known = sorted((d, lv) for d, lv in (("pitch", pitch), ("energy", energy), ("rate", rate)) if lv != "unknown")
            assert said == known, text
            assert faithfulness(text, bins).score == (1.0 if known else None)
    assert len(texts) == 64 * 4  # every row its own text


def test_template_is_seeded_per_key_and_cites_words_and_prosody():
    row = _row("a", "angry", BINS, "How dare you lie to me again!")
    text = template_rationale(row, "angry", seed=3)
    assert text == template_rationale(dict(row), "angry", seed=3)
    assert len({template_rationale({**row, "key": f"k{i}"}, "angry", seed=3) for i in range(20)}) > 5
    assert '"dare"' in text and '"lie"' in text and "How dare you lie to me again!" in text
    assert "rising" in text and "narrow range" in text and "breathy" in text and "few pauses" in text
    assert last_sentence(text).endswith("angry.")
    bare = template_rationale({"key": "b", "label": "sad"}, "sad")
    assert "not measured" in bare or "No prosody" in bare
    assert ends_in_label(bare, "sad", LABELS) and extract_claims(bare) == []


# -- the filter ------------------------------------------------------------------------------------
FILLER = "The speaker talks about the weekend plans and the people involved in them at some length. "


@pytest.mark.parametrize(("text", "gold", "reason"), [
    ("", "sad", "empty"),
    ("   ", "sad", "empty"),
    (None, "sad", "empty"),
    ("The emotion is sad.", "sad", "too_short"),
    (FILLER + "The emotion is therefore angry.", "sad", "not_ending_in_label"),
    (FILLER + "The emotion is sad. I hope this helps.", "sad", "not_ending_in_label"),  # last sentence: no label
    (FILLER + "It could be sad or angry.", "sad", "not_ending_in_label"),  # two labels, no cue
    (FILLER + "Her pitch is low, so the emotion is sad.", "sad", "contradicts_prosody"),  # pitch bin: high
    (FILLER + "She speaks loudly. The emotion is sad.", "sad", "contradicts_prosody"),  # energy bin: low
    (FILLER + "Her pitch is high and the voice is soft; the answer is sadness.", "sad", None),  # synonym
    (FILLER + "The emotion is sad, not angry.", "sad", None),  # a cue names the gold label
    (FILLER + "She might seem angry at first. Overall the emotion is sad.", "sad", None),
    (FILLER + 'She says "slow down, you are so loud!" and the emotion is sad.', "sad", None),  # quoted words
])
def test_each_rejection_reason(text, gold, reason):
    assert rejection(text, gold, LABELS, BINS, min_words=10) == reason


def test_precise_meaning_of_ending_in_the_label():
    assert last_sentence('He says "Stop it." Then: "Why?" So the emotion is angry!') == "So the emotion is angry!"
    assert ends_in_label("First happy. Then the emotion is joy.", "happy", LABELS)
    assert not ends_in_label("The emotion is happy. The end.", "happy", LABELS)
    assert not ends_in_label(None, "happy", LABELS)
    assert not ends_in_label("The emotion is calm.", "calm", LABELS)  # not in the label set


def test_clean_rationale_drops_tags_and_keeps_one_paragraph():
    raw = "<think>**Rationale:** The voice is loud.\n\nSo it is angry.</think>\n<answer>angry</answer>"
    assert clean_rationale(raw) == "The voice is loud. So it is angry."
    assert clean_rationale("Rationale: It is sad.") == "It is sad."
    assert clean_rationale("<answer>sad</answer>") == "sad"
    assert clean_rationale(None) == ""


def test_lm_prompt_gives_transcript_prosody_and_label():
    messages = lm_messages(_row("a", "sad", BINS, "I miss her."), "sad", LABELS)
    user = messages[-1]["content"]
    assert messages[0]["role"] == "system" and messages[-1]["role"] == "user"
    for part in ('Transcript: "I miss her."', "Prosody caption: pitch: high", "mean pitch: 200 Hz (high)",
                 "speaking rate: 4.0 syllables/s (normal)", "Emotion label: sad", "50 to 200 words",
                 '"Therefore, the emotion is sad."', "neutral, happy, sad, angry"):
        assert part in user, part
    assert "Transcript: (none)" in lm_messages({"key": "x"}, "sad", LABELS)[-1]["content"]


# -- the corpus ------------------------------------------------------------------------------------
def _corpus(tmp_path, with_prosody=True, with_valid=False):
    corpus = make_tiny_corpus(tmp_path, with_valid=with_valid, per_speaker_label=1)
    rng = random.Random(1)
    updates = {}
    for i, row in enumerate(corpus.rows()):
        fields = {"transcript": TRANSCRIPTS[i % len(TRANSCRIPTS)] or None}
        if with_prosody:
            bins = {d: rng.choice(LEVELS[:3]) for d in ("pitch", "energy", "rate")}
            fields["prosody"] = {"bins": bins, "measures": {"energy_mean_db": -20.0}, "caption": "x"}
        updates[row["key"]] = fields
    update_rows(corpus, updates)
    return corpus


def _split_keys(corpus, split):
    return {r["key"] for r in corpus.split(1, split)}


def test_training_rows_are_the_train_split(tmp_path):
    corpus = make_tiny_corpus(tmp_path, with_valid=True, per_speaker_label=1)
    train = {r["key"] for r in training_rows(corpus)}
    assert train == _split_keys(corpus, "train") and not train & _split_keys(corpus, "test")
    with_valid = {r["key"] for r in training_rows(corpus, fold=1, include_valid=True)}
    assert with_valid == train | _split_keys(corpus, "valid")


def test_cli_writes_template_rationales_into_every_manifest(tmp_path, capsys):
    corpus = _corpus(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["data", "cot", str(corpus.root)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "16 accepted" in out and "rejected contradicts_prosody: 0" in out
    rows = {r["key"]: r for r in corpus.rows()}
    train, test = _split_keys(corpus, "train"), _split_keys(corpus, "test")
    for key in train:
        assert rows[key]["rationale_source"] == "template"
        assert ends_in_label(rows[key]["rationale"], rows[key]["label"], LABELS)
        assert not faithfulness(rows[key]["rationale"], rows[key]["prosody"]["bins"]).contradicting
    assert all("rationale" not in rows[key] for key in test)  # test rows are never written
    fold_train = read_manifest(fold_path(corpus.root, corpus.name, 1, "train"))
    assert all(r["rationale"] == rows[r["key"]]["rationale"] for r in fold_train)
    meta = json.loads((corpus.root / "corpus.json").read_text())["cot"]
    assert meta["accepted"] == meta["written"] == meta["rows"] == len(train) == 16
    assert meta["rejected"] == dict.fromkeys(REJECTIONS, 0) and meta["source"] == "template"

    # SFT trains on them: sft_target puts the written rationale in <think>
    key = sorted(train)[0]
    row = load_prepared_corpus(corpus.root).split(1, "train")[0]
    target = sft_target("eur", row["label"], row)
    assert target == target_text("eur", row["label"], rationale=row["rationale"]) and get_format("eur").matches(target)
    assert rows[key]["rationale"] in sft_target("eur", rows[key]["label"], rows[key], reasoning="template")

    # a rerun keeps them; --overwrite with another seed replaces them
    report = write_rationales(corpus.root)
    assert (report.kept_existing, report.written) == (16, 0)
    write_rationales(corpus.root, seed=7, overwrite=True)
    changed = {r["key"]: r.get("rationale") for r in corpus.rows()}
    assert sum(changed[k] != rows[k]["rationale"] for k in train) > 8


def test_a_corpus_without_prosody_is_a_clear_error_unless_allowed(tmp_path, capsys):
    corpus = _corpus(tmp_path, with_prosody=False)
    with pytest.raises(SystemExit) as done:
        main(["data", "cot", str(corpus.root)])
    assert done.value.code == 2
    assert "emorl data prosody" in capsys.readouterr().err
    assert all("rationale" not in r for r in corpus.rows())
    report = write_rationales(corpus.root, allow_no_prosody=True)
    assert report.accepted == report.no_prosody == 16
    with pytest.raises(ValueError, match="needs --model"):
        write_rationales(corpus.root, writer="lm")
    with pytest.raises(ValueError, match="--model is for --writer lm"):
        write_rationales(corpus.root, model="somewhere")


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    return build_tiny_text_lm(tmp_path_factory.mktemp("cot_lm") / "tiny-writer", hidden_size=32)


def test_random_lm_output_is_rejected_and_counted_not_crashed(tmp_path, tiny_lm_dir, capsys):
    corpus = _corpus(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["data", "cot", str(corpus.root), "--writer", "lm", "--model", str(tiny_lm_dir), "--dtype", "float32",
              "--max-new-tokens", "8", "--batch-size", "6", "--temperature", "0"])
    assert done.value.code == 1  # nothing accepted
    assert "0 accepted" in capsys.readouterr().out
    meta = json.loads((corpus.root / "corpus.json").read_text())["cot"]
    assert meta["written"] == 16 and sum(meta["rejected"].values()) == 16 and meta["source"] == "lm:tiny-writer"
    assert all("rationale" not in r for r in corpus.rows())


def test_scripted_lm_answers_are_filtered_and_written(tmp_path, tiny_lm_dir, monkeypatch):
    corpus = _corpus(tmp_path)
    rows = {r["key"]: r for r in corpus.rows()}
    prompts = []

    def scripted(self, conversations, max_new_tokens=256, batch_size=8, temperature=0.0, seed=None):
        replies = []
        for messages in conversations:
            user = messages[-1]["content"]
            prompts.append(user)
            label = user.split("Emotion label: ")[1].split("\n")[0]
            n = len(prompts)
            if n == 1:
                replies.append("")  # empty
            elif n == 2:
                replies.append(f"The emotion is {label}.")  # too short
            elif n == 3:
                replies.append(FILLER + "Therefore, the emotion is neutral or something else entirely, maybe.")
            else:
                replies.append(f"<think>{FILLER}The words matter here. Therefore, the emotion is {label}.</think>")
        return replies

    monkeypatch.setattr(TextLM, "generate", scripted)
    report = write_rationales(corpus.root, writer="lm", model=tiny_lm_dir, dtype="float32", min_words=10)
    assert (report.written, report.accepted) == (16, 13)
    assert report.rejected == {"empty": 1, "too_short": 1, "not_ending_in_label": 1}
    assert "Emotion label:" in prompts[0] and "Prosody caption: x" in prompts[0]
    written = {r["key"]: r for r in corpus.rows() if "rationale" in r}
    assert len(written) == 13
    for key, row in written.items():
        assert row["rationale"] == f"{FILLER}The words matter here. Therefore, the emotion is {rows[key]['label']}."
        assert row["rationale_source"] == "lm:tiny-writer"
    meta = json.loads((corpus.root / "corpus.json").read_text())["cot"]
    assert meta["rejected"]["empty"] == 1 and meta["examples"]["too_short"][0]["text"].startswith("The emotion is")

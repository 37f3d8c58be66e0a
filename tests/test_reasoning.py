"""Template reasoning: ESR blocks and EUR rationales from a manifest row, and SFT targets built from them."""

import pytest

from emorl.models.sft import sft_target
from emorl.prompts import get_format
from emorl.reasoning import esr_blocks, eur_rationale, key_words, prosody_text


def test_key_words_prefer_emotion_words_and_keep_transcript_order():
    assert key_words("I am sick of your excuses, enough!") == ["sick", "excuses", "enough"]
    assert key_words("Wow, I did not expect to see you here!", limit=2) == ["wow", "expect"]
    assert key_words("The meeting is scheduled for three o'clock.") == ["meeting", "scheduled", "o'clock"]
    assert key_words(None) == [] and key_words("the a of") == []


def test_template_blocks_use_transcript_words_and_prosody_caption():
    row = {"transcript": "How dare you lie to me again!", "prosody": {"caption": "pitch: high; rate: fast"}}
    blocks = esr_blocks(row, "angry")
    assert blocks == {"transcript": "How dare you lie to me again!", "keywords": "dare, lie, again",
                      "prosody": "pitch: high; rate: fast", "synthesis": "the words and the voice point to angry"}
    assert esr_blocks({}, "sad")["transcript"] == "unclear"
    assert prosody_text({"prosody_caption": "loud"}) == "loud" and prosody_text({}) is None
    assert eur_rationale(row, "angry").endswith("point to angry.") and "dare" in eur_rationale(row, "angry")


@pytest.mark.parametrize("fmt", ["esr", "eur"])
def test_sft_targets_from_templates_pass_the_format_check_and_end_in_the_label(fmt):
    row = {"transcript": "Ugh, that smell is revolting."}
    target = sft_target(fmt, "disgust", row, reasoning="template")
    assert get_format(fmt).matches(target), target
    assert target.endswith("<answer>disgust</answer>")
    assert sft_target(fmt, "disgust", row) == "<answer>disgust</answer>"  # manifest only: an IR fallback
    written = {"reasoning": {t: "x" for t in ("transcript", "keywords", "prosody", "synthesis")}, "rationale": "y"}
    assert "revolting" not in sft_target(fmt, "disgust", {**row, **written}, reasoning="template")  # written wins

"""``emorl data cot``: EmotionCoT-style rationales for the training utterances of a prepared corpus.

EmotionThinker's EmotionCoT data pairs every utterance with a 50-200 word rationale that cites what
is said and how it is said (prosody measured and binned, ``emorl data prosody``) and ends in the
gold emotion. This module writes such rationales into the manifest rows (``row["rationale"]``,
``row["rationale_source"]``), where SFT's ``eur`` / ``cot`` targets read them
(:func:`emorl.models.sft.sft_target`). Two writers (``docs/cot.md``):

- :func:`template_rationale` — deterministic, no model: seeded sentence patterns citing the
  transcript, its key words, the pitch / loudness / rate bins (in words
  :func:`emorl.prosody.claims.extract_claims` reads back) and the other prosody bins, ending in a
  sentence that names the gold label;
- :func:`lm_messages` + :class:`emorl.textlm.TextLM` — any local instruction-tuned causal LM, given
  the transcript, the prosody caption and measures, and the gold label.

Every rationale passes :func:`rejection` before it is written: not empty, at least ``min_words``
words, its last sentence names the gold label (:func:`ends_in_label`), and no claim about pitch,
loudness or rate contradicts the measured bins (:func:`emorl.prosody.claims.contradicts`).
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emorl.answer_scan import replace_blocks
from emorl.data.manifest import ManifestError, PreparedCorpus, load_prepared_corpus, update_corpus_meta, update_rows
from emorl.labels import parse_answer
from emorl.prosody.claims import contradicts
from emorl.reasoning import key_words

log = logging.getLogger(__name__)

WRITERS = ("template", "lm")
#: Why a rationale is rejected, in the order the checks run.
REJECTIONS = ("empty", "too_short", "not_ending_in_label", "contradicts_prosody")
DEFAULT_MIN_WORDS = 20
CHUNK = 256  #: LM rows per chunk; the manifest is updated after each, so an interrupted run resumes
EXAMPLES = 3  #: rejected rationales kept per reason in corpus.json (first 300 characters)


# -- the filter ------------------------------------------------------------------------------------
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def last_sentence(text: str) -> str:
    """The final sentence: the text after the last ``.`` / ``!`` / ``?`` that has words after it."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if re.search(r"\w", s)]
    return sentences[-1] if sentences else ""


def ends_in_label(text: str | None, gold: str, labels: Sequence[str]) -> bool:
    """Whether the last sentence of ``text``, read by :func:`emorl.labels.parse_answer`, is ``gold``.

    So the last sentence names the gold label (or a synonym: *joy* for ``happy``) and no other
    label, or names several with the gold one right after a cue (*"the emotion is sad, not
    angry"*); labels named earlier in the text do not count.
    """
    return bool(text) and parse_answer(last_sentence(text), labels, reading="lenient") == gold


def rejection(text: str | None, gold: str, labels: Sequence[str], bins: Mapping[str, str] | None,
              min_words: int = DEFAULT_MIN_WORDS) -> str | None:
    """Why a rationale is rejected (one of :data:`REJECTIONS`), or None when it is accepted."""
    if not text or not text.strip():
        return "empty"
    if len(text.split()) < min_words:
        return "too_short"
    if not ends_in_label(text, gold, labels):
        return "not_ending_in_label"
    if contradicts(text, bins):
        return "contradicts_prosody"
    return None


_TAG = re.compile(r"</?think>", re.IGNORECASE)


def clean_rationale(text: str | None) -> str:
    """An LM reply as one paragraph: ``<think>`` tags and markdown emphasis dropped, ``<answer>``
    blocks dropped (or, when nothing else is left, replaced by their content), spaces collapsed."""
    text = _TAG.sub(" ", text or "").replace("**", "").replace("__", "")
    outside = replace_blocks(text, lambda _: " ")  # linear, unlike re.sub of <answer>(.*?)</answer>
    text = outside if re.search(r"\w", outside) else replace_blocks(text, lambda inner: inner)
    text = re.sub(r"^\s*(?:rationale|explanation)\s*:\s*", "", text, flags=re.IGNORECASE)
    return " ".join(text.split())


# -- the template writer ---------------------------------------------------------------------------
_OPENINGS = ('The speaker says "{t}"', 'The utterance is "{t}"', 'In this clip the speaker says "{t}"',
             'The words spoken are "{t}"')
_NO_WORDS = ("No transcript is available, so the voice has to carry the decision.",
             "The words cannot be made out, so the decision rests on the voice.")
_KEYWORDS = ("The key words {k} carry most of its emotional content.", "Words such as {k} stand out.",
             "The choice of words, {k}, already hints at the speaker's state.")
_NO_KEYWORDS = ("The words themselves carry little emotion.", "The wording is plain and gives few cues.")
#: Per dimension and level: phrases extract_claims reads as exactly that claim (tested).
_LEVEL_PHRASES = {
    "pitch": {"high": ("the pitch is high", "the voice is high-pitched", "the pitch is raised"),
              "low": ("the pitch is low", "the voice is low-pitched", "the pitch is deep"),
              "normal": ("the pitch is moderate", "the pitch is normal", "the pitch is average")},
    "energy": {"high": ("the voice is loud", "the volume is high", "the speaker talks loudly"),
               "low": ("the voice is soft", "the volume is low", "the speaker talks quietly"),
               "normal": ("the loudness is moderate", "the volume is normal", "the loudness is average")},
    "rate": {"high": ("the speaking rate is fast", "the words come quickly", "the pace is fast"),
             "low": ("the speaking rate is slow", "the words come slowly", "the pace is slow"),
             "normal": ("the speaking rate is moderate", "the pace is normal", "the tempo is average")},
}
_CONTOUR = {"high": "and rising", "low": "and falling"}  # with the slope's sign, as the caption
_RANGE = {"high": "over a wide range", "low": "within a narrow range"}
_VARIABILITY = {"high": "with marked swings in level", "low": "at a steady level"}
_PAUSES = {"low": "with few pauses", "normal": "with some pauses", "high": "with many pauses"}
_VOICE = {"low": "The voice sounds breathy.", "high": "The voice sounds clear."}
_PROSODY_FRAMES = ("Acoustically, {parts}.", "As for the voice, {parts}.", "Listening to the delivery, {parts}.",
                   "In how it is said, {parts}.")
_NO_PROSODY = ("The prosody of this clip was not measured.", "No prosody measures are available for this clip.")
_AROUSAL = {"up": ("Such an animated delivery suggests high arousal.", "This is an aroused, animated way of speaking."),
            "down": ("Such a subdued delivery suggests low arousal.", "This is a subdued, restrained way of speaking.")}
_ENDINGS = ("Taken together, the words and the voice point to {label}.", "The emotion is therefore {label}.",
            "All of this indicates {label}.", "So the most likely emotion is {label}.")


def _level_parts(bins: Mapping[str, str], measures: Mapping[str, Any], rng: random.Random) -> list[str]:
    """The pitch / loudness / rate clauses of the known bins, with contour, range and pauses."""
    parts = []
    pitch = bins.get("pitch")
    if pitch in _LEVEL_PHRASES["pitch"]:
        text = rng.choice(_LEVEL_PHRASES["pitch"][pitch])
        slope, slope_bin = measures.get("pitch_slope_st_s"), bins.get("pitch_slope")
        if slope is not None and slope_bin in _CONTOUR and (slope > 0) == (slope_bin == "high") and slope != 0:
            text += " " + _CONTOUR[slope_bin]
        if bins.get("pitch_range") in _RANGE:
            text += " " + _RANGE[bins["pitch_range"]]
        parts.append(text)
    energy = bins.get("energy")
    if energy in _LEVEL_PHRASES["energy"]:
        text = rng.choice(_LEVEL_PHRASES["energy"][energy])
        parts.append(text + (" " + _VARIABILITY[bins["energy_variability"]]
                             if bins.get("energy_variability") in _VARIABILITY else ""))
    rate = bins.get("rate")
    if rate in _LEVEL_PHRASES["rate"]:
        text = rng.choice(_LEVEL_PHRASES["rate"][rate])
        pauses = "low" if measures.get("pause_count") == 0 else bins.get("pauses")
        parts.append(text + (" " + _PAUSES[pauses] if pauses in _PAUSES else ""))
    return parts


def _arousal(bins: Mapping[str, str]) -> str | None:
    """``up`` when loudness and rate are both high (or one is, with a high pitch and the other not
    low), ``down`` likewise for low, else None."""
    for direction, level in (("up", "high"), ("down", "low")):
        other = "low" if level == "high" else "high"
        same = sum(bins.get(d) == level for d in ("energy", "rate"))
        against = sum(bins.get(d) == other for d in ("energy", "rate"))
        if same == 2 or (same == 1 and not against and bins.get("pitch") == level):
            return direction
    return None


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def template_rationale(row: Mapping[str, Any], label: str, seed: int = 0) -> str:
    """A deterministic EmotionCoT-style rationale for ``row`` ending in ``label``.

    Sentence patterns are drawn by ``random.Random(f"{seed}:{key}")``: the same row and seed give
    the same text. Transcript and key words are quoted, so their words are never read as prosody
    claims; the pitch / loudness / rate wording agrees with the row's bins by construction.
    """
    rng = random.Random(f"{seed}:{row.get('key')}")
    transcript = " ".join(str(row.get("transcript") or "").replace('"', "'").split())
    if transcript:  # the quote ends the sentence when it ends in . ! or ?
        sentences = [rng.choice(_OPENINGS).format(t=transcript) + ("" if transcript[-1] in ".!?" else ".")]
        words = [w.strip("'") for w in key_words(transcript) if w.strip("'")]
        quoted = [f'"{w}"' for w in words]
        sentences.append(rng.choice(_KEYWORDS).format(k=_join(quoted)) if words else rng.choice(_NO_KEYWORDS))
    else:
        sentences = [rng.choice(_NO_WORDS)]
    prosody = row.get("prosody") if isinstance(row.get("prosody"), Mapping) else {}
    bins, measures = prosody.get("bins") or {}, prosody.get("measures") or {}
    parts = _level_parts(bins, measures, rng)
    if parts:
        sentences.append(rng.choice(_PROSODY_FRAMES).format(parts=_join(parts)))
        if bins.get("hnr") in _VOICE:
            sentences.append(_VOICE[bins["hnr"]])
        arousal = _arousal(bins)
        if arousal:
            sentences.append(rng.choice(_AROUSAL[arousal]))
    else:
        sentences.append(rng.choice(_NO_PROSODY))
    sentences.append(rng.choice(_ENDINGS).format(label=label))
    return " ".join(sentences)


# -- the LM writer ---------------------------------------------------------------------------------
LM_SYSTEM = "You are an expert in speech emotion. You explain, in plain prose, why a speaker sounds the way they do."
LM_INSTRUCTION = (
    "Write a rationale of 50 to 200 words explaining why the emotion of the speaker is {label}. Cite the key words of "
    "the transcript and describe the pitch, the loudness and the speaking rate exactly as measured above (the "
    "levels are relative to the other clips of the corpus); never contradict them. Write one paragraph of "
    "plain text, without lists, headings or tags, as if you were listening to the clip: do not mention "
    "measurements, captions or that the label was given. End with the sentence: \"Therefore, the emotion is "
    "{label}.\""
)
_MEASURES = (  # (measure, bin, format, name)
    ("pitch_mean_hz", "pitch", "{:.0f} Hz", "mean pitch"),
    ("pitch_range_st", "pitch_range", "{:.1f} semitones", "pitch range"),
    ("pitch_slope_st_s", "pitch_slope", "{:+.1f} semitones/s", "pitch slope"),
    ("energy_mean_db", "energy", "{:.1f} dBFS", "loudness"),
    ("energy_std_db", "energy_variability", "{:.1f} dB", "loudness variation"),
    ("rate_syl_s", "rate", "{:.1f} syllables/s", "speaking rate"),
    ("pause_ratio", "pauses", "{:.0%} of the speech", "pauses"),
    ("jitter_local_pct", "jitter", "{:.2f} %", "jitter"),
    ("shimmer_local_pct", "shimmer", "{:.2f} %", "shimmer"),
    ("hnr_db", "hnr", "{:.1f} dB", "harmonics-to-noise ratio"),
)


def measures_text(prosody: Mapping[str, Any] | None) -> str:
    """The row's measures with their bins, one per line (``- mean pitch: 212 Hz (high)``)."""
    prosody = prosody or {}
    measures, bins = prosody.get("measures") or {}, prosody.get("bins") or {}
    lines = []
    for name, bin_name, fmt, title in _MEASURES:
        value = measures.get(name)
        if value is None:
            continue
        level = bins.get(bin_name)
        lines.append(f"- {title}: {fmt.format(value)}" + (f" ({level})" if level and level != "unknown" else ""))
    return "\n".join(lines) or "- not measured"


def lm_messages(row: Mapping[str, Any], label: str, labels: Sequence[str]) -> list[dict]:
    """The chat prompt of the LM writer for one row (``docs/cot.md`` shows it in full)."""
    prosody = row.get("prosody") if isinstance(row.get("prosody"), Mapping) else None
    transcript = str(row.get("transcript") or "").strip()
    user = (
        f"Transcript: \"{transcript}\"\n" if transcript else "Transcript: (none)\n"
    ) + (
        f"Prosody caption: {(prosody or {}).get('caption') or 'not measured'}\n"
        f"Prosody measures:\n{measures_text(prosody)}\n"
        f"Emotion options: {', '.join(labels)}\n"
        f"Emotion label: {label}\n\n" + LM_INSTRUCTION.format(label=label)
    )
    return [{"role": "system", "content": LM_SYSTEM}, {"role": "user", "content": user}]


# -- the corpus ------------------------------------------------------------------------------------
def training_rows(corpus: PreparedCorpus, fold: int | None = None, include_valid: bool = False) -> list[dict]:
    """Main-manifest rows of the ``train`` split (and ``valid`` with ``include_valid``) of ``fold``,
    or of any fold when ``fold`` is None, in manifest order; test rows of those folds are left out."""
    folds = corpus.folds if fold is None else [fold]
    splits = ("train", "valid") if include_valid else ("train",)
    keys = {row["key"] for f in folds for split in splits for row in corpus.split(f, split)}
    return [row for row in corpus.rows() if row["key"] in keys]


@dataclass
class CotReport:
    """What ``emorl data cot`` did."""

    root: Path
    writer: str
    source: str
    rows: int = 0  #: training rows considered
    kept_existing: int = 0  #: rows with a rationale already (no ``--overwrite``)
    written: int = 0  #: rationales the writer produced in this run
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    no_prosody: int = 0  #: rows written without prosody bins (nothing to contradict)

    def summary(self) -> dict[str, Any]:
        """What ``corpus.json`` stores under ``"cot"``."""
        return {"writer": self.writer, "source": self.source, "rows": self.rows, "kept_existing": self.kept_existing,
                "written": self.written, "accepted": self.accepted,
                "rejected": {reason: self.rejected.get(reason, 0) for reason in REJECTIONS},
                "no_prosody": self.no_prosody, "examples": self.examples}

    def format(self) -> str:
        lines = [f"{self.root}: rationales by {self.source} for {self.rows} training rows: {self.written} written, "
                 f"{self.accepted} accepted, {sum(self.rejected.values())} rejected, "
                 f"{self.kept_existing} kept from before"]
        lines += [f"  rejected {reason}: {self.rejected.get(reason, 0)}" for reason in REJECTIONS]
        if self.no_prosody:
            lines.append(f"  {self.no_prosody} row(s) had no prosody bins (not checked for contradictions)")
        return "\n".join(lines)


Writer = Callable[[Sequence[dict]], list[str]]


def _bins(row: Mapping[str, Any]) -> Mapping[str, str] | None:
    prosody = row.get("prosody")
    return prosody.get("bins") if isinstance(prosody, Mapping) else None


def _filter_and_store(corpus: PreparedCorpus, report: CotReport, rows: Sequence[dict], texts: Sequence[str],
                      labels: Sequence[str], min_words: int) -> None:
    """Check each rationale, count it, and write the accepted ones into the manifests."""
    updates: dict[str, dict] = {}
    for row, text in zip(rows, texts, strict=True):
        report.written += 1
        report.no_prosody += not _bins(row)
        reason = rejection(text, row["label"], labels, _bins(row), min_words)
        if reason is None:
            report.accepted += 1
            updates[row["key"]] = {"rationale": text, "rationale_source": report.source}
            continue
        report.rejected[reason] += 1
        examples = report.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES:
            examples.append({"key": row["key"], "label": row["label"], "text": text[:300]})
        log.debug("rejected %s (%s): %s", row["key"], reason, text[:200])
        if row.get("rationale"):  # --overwrite: a rejected row keeps no earlier rationale either
            updates[row["key"]] = {"rationale": None, "rationale_source": None}
    if updates:
        update_rows(corpus, updates)
    update_corpus_meta(corpus.root, {"cot": report.summary()})


def write_rationales(root: str | Path, writer: str = "template", model: str | Path | None = None,
                     min_words: int = DEFAULT_MIN_WORDS, overwrite: bool = False, allow_no_prosody: bool = False,
                     fold: int | None = None, include_valid: bool = False, seed: int = 0,
                     dtype: str = "bfloat16", device: str = "cpu", batch_size: int = 8, max_new_tokens: int = 400,
                     temperature: float = 0.7) -> CotReport:
    """Write, filter and store rationales for the training rows of a prepared corpus."""
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r}; choose from {', '.join(WRITERS)}")
    if (writer == "lm") != (model is not None):
        raise ValueError("--writer lm needs --model PATH (a local causal LM folder)" if writer == "lm"
                         else "--model is for --writer lm")
    corpus = load_prepared_corpus(root)
    labels = list(corpus.label_set.classes)
    rows = training_rows(corpus, fold, include_valid)
    if not rows:
        raise ManifestError(f"{root}: no training rows (fold {fold if fold is not None else 'any'})")
    if not allow_no_prosody and not any(_bins(row) for row in rows):
        raise ManifestError(f"{root}: the manifest has no prosody; run `emorl data prosody {root}` first "
                            "(or pass --allow-no-prosody to write rationales without it)")
    source = "template" if writer == "template" else f"lm:{Path(model).name}"
    report = CotReport(Path(root), writer, source, rows=len(rows))
    pending = []
    for row in rows:
        if row.get("rationale") and not overwrite:
            report.kept_existing += 1
        elif row["label"] not in labels:
            raise ManifestError(f"{root}: row {row['key']} has label {row['label']!r}, not in {labels}")
        else:
            pending.append(row)
    if writer == "template":
        write: Writer = lambda chunk: [template_rationale(r, r["label"], seed) for r in chunk]  # noqa: E731
    else:
        from emorl.textlm import TextLM

        lm = TextLM(model, dtype=dtype, device=device)
        write = lambda chunk: [clean_rationale(t) for t in lm.generate(  # noqa: E731
            [lm_messages(r, r["label"], labels) for r in chunk], max_new_tokens=max_new_tokens,
            batch_size=batch_size, temperature=temperature, seed=seed + report.written)]
    size = CHUNK if writer == "lm" else max(len(pending), 1)
    for start in range(0, len(pending), size):
        chunk = pending[start: start + size]
        _filter_and_store(corpus, report, chunk, write(chunk), labels, min_words)
        if writer == "lm":
            log.info("%d / %d rows written, %d accepted", report.written, len(pending), report.accepted)
    update_corpus_meta(root, {"cot": report.summary()})
    return report


def main_cot(root: Path, **options: Any) -> int:
    """Print the report; exit code 0, or 1 when rationales were written and none was accepted."""
    report = write_rationales(root, **options)
    print(report.format())
    return 1 if report.written and not report.accepted else 0

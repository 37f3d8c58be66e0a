"""Answers per second of the format checks and the label reading, against the regexes they replaced.

    python tools/bench_rewards.py                 # 500 and 20,000 characters, old regexes up to 3 s a case
    python tools/bench_rewards.py --lengths 500 2000 --old-limit 10

For each answer format (IR, EUR, ESR), each length and two kinds of answer (``valid``: a well-formed
answer of that length; ``cut``: the same cut at that length inside its last block, what
``max_new_tokens`` leaves), it times ``FORMATS[name].matches`` (the format reward, ``train/format_rate``)
and ``predicted_label`` (the accuracy reward, the evaluation's reading), and the same two with
the regexes emorl used before (copied below: the nested lazy groups of the format check, and the
``<answer>(.*?)</answer>`` extraction, whose last block is then read by today's ``parse_answer``).
An old regex runs in a child process stopped after ``--old-limit`` seconds: ``> 3 s`` means it had
not finished one answer by then. Times depend on the machine and its load: compare columns of one run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emorl.labels import parse_answer  # noqa: E402
from emorl.prompts import ESR_TAGS, FORMATS  # noqa: E402
from emorl.rl.rewards import predicted_label  # noqa: E402

CLASSES = ["neutral", "happy", "sad", "surprise", "disgust", "angry", "fear"]
WORD = "the speaker sounds tired and low and the words are "


# -- the old regexes (emorl before issue 14) -------------------------------------------------------
def _body(*tags: str) -> str:
    no_tag = rf"(?!</?(?:{'|'.join(tags)})>)"
    return rf"(?:{no_tag}.)*?{no_tag}\S(?:{no_tag}.)*?"


_ANSWER = rf"<answer>\s*(?P<answer>{_body('think', 'answer', *ESR_TAGS)})\s*</answer>"
_ESR_BLOCKS = r"\s*".join(rf"<{tag}>{_body('think', 'answer', *ESR_TAGS)}</{tag}>" for tag in ESR_TAGS)
OLD_FORMATS = {name: re.compile(rf"\s*{pattern}\s*", re.DOTALL | re.IGNORECASE) for name, pattern in {
    "ir": _ANSWER,
    "eur": rf"<think>{_body('think', 'answer')}</think>\s*{_ANSWER}",
    "esr": rf"<think>\s*{_ESR_BLOCKS}\s*</think>\s*{_ANSWER}",
}.items()}
OLD_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)


def old_predicted_label(text: str) -> str | None:
    blocks = OLD_BLOCK.findall(text)
    return parse_answer(f"<answer>{blocks[-1]}</answer>", CLASSES, reading="lenient") if blocks else None


# -- answers ---------------------------------------------------------------------------------------
def answer(name: str, length: int, cut: bool) -> str:
    """A ``name`` answer of ``length`` characters; ``cut``: stopped inside its last block (no closing tag)."""
    fill = lambda n: (WORD * (n // len(WORD) + 1))[:n]  # noqa: E731
    if name == "ir":
        head, tail = "<answer>sad because ", "</answer>"
    elif name == "eur":
        head, tail = f"<think>{fill(length // 2)}</think><answer>sad because ", "</answer>"
    else:
        share = length // 6
        blocks = "".join(f"<{tag}>{fill(share)}</{tag}>" for tag in ESR_TAGS)
        head, tail = f"<think>{blocks}</think><answer>sad because ", "</answer>"
    body = fill(max(length - len(head) - (0 if cut else len(tail)), 1))
    return (head + body)[:length] if cut else head + body + tail


# -- timing ----------------------------------------------------------------------------------------
def rate(function, text: str, budget: float = 0.3) -> float:
    """Answers per second: calls of ``function(text)`` for about ``budget`` seconds (at least one)."""
    calls, start = 0, time.perf_counter()
    while True:
        function(text)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return calls / elapsed


def _child(kind: str, name: str, text: str, pipe) -> None:
    function = (lambda t: OLD_FORMATS[name].fullmatch(t)) if kind == "format" else old_predicted_label
    pipe.send(rate(function, text))


def old_rate(kind: str, name: str, text: str, limit: float) -> float | None:
    """The old regex's answers per second, or ``None`` when one answer took longer than ``limit`` seconds."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(kind, name, text, child), daemon=True)
    process.start()
    ready = parent.poll(limit)
    result = parent.recv() if ready else None
    process.terminate()
    process.join()
    return result


def _show(value: float | None, limit: float) -> str:
    return f"> {limit:g} s" if value is None else f"{value:,.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[500, 20_000])
    parser.add_argument("--old-limit", type=float, default=3.0, help="seconds an old regex may take per case")
    args = parser.parse_args(argv)
    header = f"{'format':6}  {'chars':>6}  {'answer':6}  {'check/s':>10}  {'old check/s':>11}  {'label/s':>10}  {'old label/s':>11}"
    print(header)
    print("-" * len(header))
    for name in ("ir", "eur", "esr"):
        fmt = FORMATS[name]
        for length in args.lengths:
            for cut in (False, True):
                text = answer(name, length, cut)
                assert fmt.matches(text) != cut, (name, length, cut)
                new_check = rate(fmt.matches, text)
                new_label = rate(lambda t: predicted_label(t, CLASSES), text)
                old_check = old_rate("format", name, text, args.old_limit)
                old_label = old_rate("label", name, text, args.old_limit)
                print(f"{name:6}  {len(text):>6}  {'cut' if cut else 'valid':6}  {new_check:>10,.0f}  "
                      f"{_show(old_check, args.old_limit):>11}  {new_label:>10,.0f}  {_show(old_label, args.old_limit):>11}",
                      flush=True)


if __name__ == "__main__":
    main()

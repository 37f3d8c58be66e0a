"""The demo's console and table: known warnings dropped by exact message only, chance, differences, verdicts."""

import importlib.util
import logging
import warnings
from pathlib import Path

import pytest

from emorl import console
from emorl.demo import chance_scores, comparison_table

REPO = Path(__file__).resolve().parents[1]
EVAL_MODE = ("Found 3 module(s) in eval mode at the start of training. This may lead to unexpected behavior "
             "during training. If this is intentional, you can ignore this warning.")
LITLOGGER = console.KNOWN_INFO[0][1]


def _shown(message: str, category=UserWarning) -> bool:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        console.quiet_known_warnings()
        warnings.warn(message, category)
    return bool(caught)


def test_known_warnings_are_dropped_by_their_exact_message_and_nothing_else():
    assert not _shown(EVAL_MODE)
    assert _shown(EVAL_MODE + " And something new.")  # a longer message is another message
    assert _shown(EVAL_MODE, FutureWarning)  # another category too
    assert _shown("Found 3 module(s) that are broken")
    assert _shown("an unrelated warning")


def test_the_litlogger_tip_is_dropped_and_other_info_lines_kept(caplog):
    console.quiet_known_warnings()
    log = logging.getLogger(console.KNOWN_INFO[0][0])
    with caplog.at_level(logging.INFO, logger=log.name):
        log.info(LITLOGGER)
        log.info("GPU available: False, used: False")
        log.error(LITLOGGER + " but failing")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["GPU available: False, used: False", LITLOGGER + " but failing"]


def test_chance_of_a_uniform_guesser():
    labels = ["a"] * 12 + ["b"] * 24 + ["c"] * 24
    chance = chance_scores(labels, ["a", "b", "c"])
    assert chance["ua"] == chance["wa"] == pytest.approx(1 / 3)
    f1 = [2 * p * (1 / 3) / (p + 1 / 3) for p in (12 / 60, 24 / 60, 24 / 60)]  # precision n / N, recall 1 / K
    assert chance["f1"] == pytest.approx(sum(f1) / 3)
    assert chance_scores(["a", "a"], ["a", "b"])["f1"] == pytest.approx((2 * 1 * 0.5 / 1.5) / 2)  # absent class: 0


def test_comparison_table_shows_chance_parse_and_each_difference_to_the_sft_row():
    rows = {"sft_esr": {"ua": 0.5, "wa": 0.55, "f1": 0.45, "parse_rate": 0.9},
            "emorl_eswr_esr": {"ua": 0.6, "wa": 0.5, "f1": 0.45, "parse_rate": 1.0}}
    table = comparison_table(rows, {"ua": 0.125, "wa": 0.125, "f1": 0.12}).splitlines()
    assert table[0].split() == ["UA", "WA", "F1", "parse", "dUA", "dWA", "dF1"]
    assert table[2].split() == ["chance", "12.50", "12.50", "12.00"]
    assert table[3].split() == ["sft_esr", "50.00", "55.00", "45.00", "90.00"]
    assert table[4].split() == ["emorl_eswr_esr", "60.00", "50.00", "45.00", "100.00", "+10.00", "-5.00", "+0.00"]


def test_bench_verdict_needs_a_gap_larger_than_the_seed_spread():
    spec = importlib.util.spec_from_file_location("bench_demo", REPO / "tools" / "bench_demo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.verdict([50, 52, 54], [40, 41, 42]) == (11.0, 4, "above")
    assert bench.verdict([50, 60, 40], [45, 46, 47])[2] == "within noise"  # gap 3, spread 20
    assert bench.verdict([30, 31, 32], [40, 41, 42])[2] == "below"
    per_seed = {s: {"chance": {"ua": 0.125, "wa": 0.125, "f1": 0.12},
                    "sft_esr": {"ua": 0.5 + s / 100, "wa": 0.5, "f1": 0.5, "parse_rate": 1.0},
                    "emorl_eswr_esr": {"ua": 0.6 + s / 100, "wa": 0.5, "f1": 0.5, "parse_rate": 1.0}} for s in (0, 1, 2)}
    summary = bench.summary_table(per_seed, "sft_esr", "grpo_bcr_ir")
    assert "61.00 +- 1.00" in summary and "+10.00 (above; spread 2.00)" in summary


def test_demo_takes_seed_and_verbose():
    from emorl.commands import build_parser

    args = build_parser().parse_args(["demo", "--seed", "2", "--verbose"])
    assert (args.seed, args.verbose) == (2, True)
    args = build_parser().parse_args(["demo"])
    assert (args.seed, args.verbose) == (0, False)


def test_quiet_console_is_a_no_op_when_verbose():
    logger = logging.getLogger("lightning.fabric.utilities.seed")
    logger.setLevel(logging.NOTSET)
    console.quiet_console(verbose=True)
    assert logger.level == logging.NOTSET
    console.quiet_console(verbose=False)
    assert logger.level == logging.WARNING
    logger.setLevel(logging.NOTSET)


def test_emorl_verbose_demo_reaches_the_demo(monkeypatch):
    """`emorl demo --verbose`: cli.main takes --verbose out as a global option; the demo still gets it."""
    import emorl.demo
    from emorl.cli import main

    seen = {}
    monkeypatch.setattr(emorl.demo, "run_emorl_demo", lambda *a, **k: seen.update(k))
    monkeypatch.setenv("EMORL_TRACEBACK", "0")  # restored (removed) after the test: main sets it to 1
    with pytest.raises(SystemExit) as done:
        main(["demo", "--verbose"])
    assert done.value.code == 0 and seen["verbose"] is True

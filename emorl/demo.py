"""The main job on the embedded default: EMO-RL end to end on the demo corpus and the tiny model.

    emorl demo          # (make demo) a few minutes on a 2-core CPU, nothing downloaded

1. the demo corpus is rendered with espeak-ng and prepared as RAVDESS (fold 1: actors 1 and 20
   held out), and the tiny random Qwen2-Audio is built (both once, under ``--data-root``);
2. SFT warm start on ESR answers built from templates (``configs/demo/tiny_sft_esr.yaml``): the
   random model has to learn the answer format before GRPO can reward anything;
3. GRPO with ESWR + ESR from that warm start (``configs/demo/tiny_emorl_esr.yaml``);
4. both models answer the held-out actors' clips; the UA / WA / F1 / parse-rate table is printed;
5. ``emorl report`` of the two runs is written to ``reports/demo`` (``report.md``, ``report.csv``,
   figures; ``docs/report.md``).

Every stage is an ordinary config: ``emorl fit --config ...`` runs it alone.
``emorl demo --config X.yaml`` (:func:`run_demo`) trains and tests that one config on the demo
corpus instead (e.g. ``configs/demo/acoustic.yaml``, the MFCC + prosody baseline).
"""

from __future__ import annotations

import time
from pathlib import Path

#: ``emorl demo --config`` without a config: the MFCC + prosody baseline (one stage)
ACOUSTIC_CONFIG = "configs/demo/acoustic.yaml"
SFT_CONFIG = "configs/demo/tiny_sft_esr.yaml"
REPORT_DIR = Path("reports/demo")
GRPO_CONFIG = "configs/demo/tiny_emorl_esr.yaml"


def prepare_demo_corpus(data_root: Path) -> Path:
    """Render the demo corpus with espeak-ng and prepare it as RAVDESS (fold 1), when not there yet;
    returns the prepared corpus's folder (``DATA_ROOT/prepared``)."""
    from emorl.data.corpora import PREPARERS
    from emorl.data.synth import synthesize

    raw, prepared = data_root / "raw", data_root / "prepared"
    if not (raw / "transcripts.tsv").is_file():
        print(f"[demo] rendering the demo corpus into {raw} ...", flush=True)
        print(synthesize(raw), flush=True)
    if not (prepared / "corpus.json").is_file():
        print(f"[demo] preparing it into {prepared} ...", flush=True)
        PREPARERS["ravdess"](raw, prepared)
    return prepared


def prepare_demo_data(data_root: Path) -> tuple[Path, Path]:
    """The demo corpus (:func:`prepare_demo_corpus`) and the tiny random Qwen2-Audio, when not there yet."""
    from emorl import tiny_models

    prepared = prepare_demo_corpus(data_root)
    model = data_root / "models" / "tiny-qwen2-audio"
    if not (model / "config.json").is_file():
        print(f"[demo] building the tiny random Qwen2-Audio in {model} ...", flush=True)
        tiny_models.build_tiny("qwen2-audio-7b-instruct", model, seed=0)
    return prepared, model


def _stage(config: Path, prepared: Path, model: Path, overrides: list[str]):
    from emorl.lightning_cli import EmorlCLI

    args = ["--config", str(config), "--data.data_dir", str(prepared), "--model.init_args.model", str(model)]
    cli = EmorlCLI(args=args + overrides, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def run_emorl_demo(
    data_root: Path, sft_epochs: int | None = None, grpo_steps: int | None = None
) -> dict[str, dict[str, dict[str, float]]]:
    """Warm start, GRPO, test; returns ``{"sft_esr" | "emorl_esr": {test_set: {metric: value}}}``."""
    from emorl.lightning_cli import resolve_config
    from emorl.metrics import format_table
    from emorl.report import write_report
    from emorl.results import write_test_results

    clock = time.perf_counter()
    seconds: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name], clock = now - clock, now

    prepared, model = prepare_demo_data(data_root)
    lap("data")
    sft_overrides = [] if sft_epochs is None else ["--trainer.max_epochs", str(sft_epochs)]
    print("[demo] stage 1/3: SFT warm start on ESR answers", flush=True)
    sft = _stage(resolve_config(SFT_CONFIG), prepared, model, sft_overrides)
    warm_start = sft.trainer.checkpoint_callback.last_model_path
    lap("SFT")
    print(f"[demo] stage 2/3: GRPO (ESWR + ESR) from {warm_start}", flush=True)
    grpo_overrides = ["--model.init_args.init_checkpoint", warm_start]
    if grpo_steps is not None:
        grpo_overrides += ["--trainer.max_steps", str(grpo_steps)]
    grpo = _stage(resolve_config(GRPO_CONFIG), prepared, model, grpo_overrides)
    lap("GRPO")
    print("[demo] stage 3/3: the held-out actors", flush=True)
    results = {}
    for name, cli in (("sft_esr", sft), ("emorl_esr", grpo)):
        cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
        results[name] = cli.model.test_results
        write_test_results(cli.trainer, cli.model, trained_here=True)
    lap("tests")
    rows = {f"{name} {test_set}": scores for name, sets in results.items() for test_set, scores in sets.items()}
    print(f"\n[demo] held-out actors (runs: {sft.trainer.log_dir}, {grpo.trainer.log_dir}):")
    print(format_table(rows))
    write_report([Path(sft.trainer.log_dir), Path(grpo.trainer.log_dir)], REPORT_DIR)
    lap("report")
    print(f"[demo] report: {REPORT_DIR / 'report.md'} (report.csv and the figures beside it)")
    print("[demo] wall time: " + ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
          + f" (total {sum(seconds.values()) / 60:.1f} min)")
    return results


def run_demo(data_root: Path, config: str = ACOUSTIC_CONFIG, max_epochs: int | None = None) -> dict:
    """``emorl demo --config``: the demo corpus (once), then fit, test and print one config's table.

    Returns ``{test_set: {metric: value}}``.
    """
    from emorl.lightning_cli import EmorlCLI, resolve_config
    from emorl.metrics import format_table

    prepared = prepare_demo_corpus(data_root)
    args = ["--config", str(resolve_config(config)), "--data.data_dir", str(prepared)]
    if max_epochs is not None:
        args += ["--trainer.max_epochs", str(max_epochs)]
    cli = EmorlCLI(args=args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best")
    results = cli.model.test_results
    print(f"\n[demo] held-out actors, {cli.trainer.log_dir}:")
    print(format_table(results))
    return results

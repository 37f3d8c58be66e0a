"""The main job on the embedded default: EMO-RL against its baselines on the demo corpus and a tiny model.

    emorl demo          # (make demo) a few minutes on a 2-core CPU, nothing downloaded
    emorl demo --seed 1 --verbose

1. the demo corpus is rendered with espeak-ng and prepared as RAVDESS (fold 1: actors 1 and 20
   held out), and the tiny random Qwen2-Audio is built (both once, under ``--data-root``);
2. the hearing stage (:func:`emorl.tiny_models.train_hearing`): the tiny model's audio tower and
   projector learn the emotions of the training actors' voices, so that the model can hear prosody
   (a random audio tower hears nothing; docs/rl.md, "The demo");
3. the SFT warm start on ESR answers built from templates and on IR answers, each training clip
   asked one of the two questions (``configs/demo/tiny_sft_esr.yaml``, ``extra_formats: [ir]``):
   the language model learns both answer formats and to read the audio tokens;
4. from that same warm start, GRPO with BCR + IR (``configs/demo/tiny_grpo_bcr_ir.yaml``, the
   paper's baseline) and GRPO with ESWR + ESR (``configs/demo/tiny_emorl_esr.yaml``, EMO-RL);
5. the three models answer the held-out actors' clips; the table (chance, UA / WA / F1 / parse
   rate, each row's difference to the SFT row) is printed;
6. ``emorl report`` of the three runs is written to ``reports/demo`` (``docs/report.md``).

Results do not depend on the machine's core count or load: :func:`pin_threads` fixes torch's
thread counts (the order of every sum) before anything runs. The console shows emorl's stage
lines, progress bars, each stage's wall time and the table (:mod:`emorl.console`; ``--verbose``:
everything the libraries say). Every training stage is an ordinary config: ``emorl fit --config
...`` runs it alone. ``emorl demo --config X.yaml`` (:func:`run_demo`) trains and tests that one
config on the demo corpus instead (e.g. ``configs/demo/acoustic.yaml``, the MFCC + prosody baseline).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

#: ``emorl demo --config`` without a config: the MFCC + prosody baseline (one stage)
ACOUSTIC_CONFIG = "configs/demo/acoustic.yaml"
SFT_CONFIG = "configs/demo/tiny_sft_esr.yaml"
BCR_IR_CONFIG = "configs/demo/tiny_grpo_bcr_ir.yaml"
GRPO_CONFIG = "configs/demo/tiny_emorl_esr.yaml"
REPORT_DIR = Path("reports/demo")
#: the rows of the comparison: name -> config (the SFT row is the warm start itself)
GRPO_ROWS = {"grpo_bcr_ir": BCR_IR_CONFIG, "emorl_eswr_esr": GRPO_CONFIG}
SFT_ROW = "sft_esr"
#: torch's intra-op threads in every demo stage: fixed, so that no sum's order depends on the machine; one, because
#: the tiny model's kernels gain nothing from a second thread and threads that wait for each other on a loaded
#: machine lose much (an epoch of the hearing stage took 40 times longer with 2 threads beside 4 busy processes)
DEMO_THREADS = 1
#: epochs of the hearing stage (about 2-4 s each on 2 cores)
HEARING_EPOCHS = 12


def pin_threads(threads: int = DEMO_THREADS) -> None:
    """Fix torch's intra-op thread count (and inter-op to 1, when still possible): a kernel splits its
    sums by the thread count, so the count, not the machine's cores or load, decides their order."""
    import torch

    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable before the first inter-op work; it orders no sum of ours
            pass


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


def training_rows(prepared: Path, fold: int = 1) -> list[dict]:
    """The fold's training rows (the training actors only), each ``wav`` made absolute."""
    from emorl.data.manifest import fold_path, load_prepared_corpus, read_manifest

    corpus = load_prepared_corpus(prepared)
    rows = read_manifest(fold_path(prepared, corpus.name, fold, "train"))
    return [{**row, "wav": str(corpus.resolve_wav(row["wav"]))} for row in rows]


def hearing_model(prepared: Path, model: Path, seed: int, epochs: int = HEARING_EPOCHS) -> Path:
    """The tiny model after the hearing stage on the training actors (made once per seed and epochs)."""
    from emorl.console import progress_bar
    from emorl.tiny_models import train_hearing

    out = model.parent / f"{model.name}-hears-seed{seed}-e{epochs}"
    if (out / "config.json").is_file():
        print(f"[demo] the hearing model is there: {out}", flush=True)
        return out
    bar = progress_bar(epochs, "hearing")
    stats = train_hearing(model, training_rows(prepared), out.with_name(out.name + ".partial"), epochs=epochs,
                          seed=seed, progress=lambda epoch, total, loss: bar.update(1, loss=loss))
    bar.close()
    out.with_name(out.name + ".partial").rename(out)
    print(f"[demo] hearing stage: {stats['clips']} training clips, last epoch accuracy "
          f"{100 * stats['train_acc']:.1f} %, loss {stats['loss']:.3f}", flush=True)
    return out


def _stage(config: Path, prepared: Path, model: Path, overrides: list[str], verbose: bool = False):
    from emorl.lightning_cli import EmorlCLI

    args = ["--config", str(config), "--data.data_dir", str(prepared), "--model.init_args.model", str(model),
            "--trainer.enable_progress_bar", "true"]
    if not verbose:
        args += ["--trainer.enable_model_summary", "false"]
    cli = EmorlCLI(args=args + overrides, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def chance_scores(labels: list[str], classes: list[str]) -> dict[str, float]:
    """Expected UA / WA / macro F1 of a guesser uniform over ``classes`` on a test set of ``labels``:
    UA = WA = 1 / K; a class of n of the N clips has precision n / N and recall 1 / K."""
    k, n = len(classes), len(labels)
    f1 = []
    for name in classes:
        precision, recall = labels.count(name) / n, 1 / k
        f1.append(0.0 if precision == 0 else 2 * precision * recall / (precision + recall))
    return {"ua": 1 / k, "wa": 1 / k, "f1": sum(f1) / k}


def comparison_table(rows: Mapping[str, Mapping[str, float]], chance: Mapping[str, float], base: str = SFT_ROW) -> str:
    """The demo's table: chance, then each row's UA / WA / F1 / parse rate (percent) and its
    difference to row ``base`` (``dUA dWA dF1``, points)."""
    head = ["", "UA", "WA", "F1", "parse", "dUA", "dWA", "dF1"]
    lines = [["chance", *(f"{100 * chance[m]:.2f}" for m in ("ua", "wa", "f1")), "", "", "", ""]]
    for name, scores in rows.items():
        delta = ["" if name == base else f"{100 * (scores[m] - rows[base][m]):+.2f}" for m in ("ua", "wa", "f1")]
        lines.append([name, *(f"{100 * scores[m]:.2f}" for m in ("ua", "wa", "f1", "parse_rate")), *delta])
    widths = [max(len(line[i]) for line in [head, *lines]) for i in range(len(head))]
    text = ["  ".join([cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))]).rstrip()
            for cells in [head, *lines]]
    return "\n".join([text[0], "  ".join("-" * w for w in widths), *text[1:]])


class StageClock:
    """Wall time per stage: ``lap(name)`` closes the stage that ran since the last lap."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self.start = now - self.start, now
        print(f"[demo] {name} done in {self.seconds[name]:.0f} s", flush=True)

    def summary(self) -> str:
        parts = ", ".join(f"{name} {value:.0f} s" for name, value in self.seconds.items())
        return f"[demo] wall time: {parts} (total {sum(self.seconds.values()) / 60:.1f} min)"


def run_emorl_demo(
    data_root: Path,
    sft_epochs: int | None = None,
    grpo_steps: int | None = None,
    seed: int = 0,
    verbose: bool = False,
    hearing_epochs: int = HEARING_EPOCHS,
    write_report: bool = True,
) -> dict[str, dict[str, float]]:
    """Hearing, SFT warm start, GRPO BCR + IR and EMO-RL from it, the test of all three on the held-out
    actors; returns ``{row: {metric: value}}`` (``sft_esr``, ``grpo_bcr_ir``, ``emorl_eswr_esr`` and
    ``chance``)."""
    from emorl.console import quiet_console
    from emorl.lightning_cli import resolve_config
    from emorl.results import write_test_results

    pin_threads()
    quiet_console(verbose)
    clock = StageClock()
    prepared, model = prepare_demo_data(data_root)
    clock.lap("data")
    print(f"[demo] stage 1/5: hearing: the tiny model's audio tower + projector on the training actors (seed {seed})",
          flush=True)
    model = hearing_model(prepared, model, seed, hearing_epochs)
    clock.lap("hearing")
    seeding = ["--seed_everything", str(seed)]
    print("[demo] stage 2/5: SFT warm start on ESR and IR answers", flush=True)
    sft_overrides = seeding + ([] if sft_epochs is None else ["--trainer.max_epochs", str(sft_epochs)])
    runs = {SFT_ROW: _stage(resolve_config(SFT_CONFIG), prepared, model, sft_overrides, verbose)}
    warm_start = runs[SFT_ROW].trainer.checkpoint_callback.last_model_path
    clock.lap("SFT")
    for number, (name, config) in enumerate(GRPO_ROWS.items(), start=3):
        what = "GRPO with BCR + IR (the paper's baseline)" if name == "grpo_bcr_ir" else "EMO-RL: GRPO with ESWR + ESR"
        print(f"[demo] stage {number}/5: {what}, from the warm start", flush=True)
        overrides = seeding + ["--model.init_args.init_checkpoint", warm_start]
        if grpo_steps is not None:
            overrides += ["--trainer.max_steps", str(grpo_steps)]
        runs[name] = _stage(resolve_config(config), prepared, model, overrides, verbose)
        clock.lap(name)
    print("[demo] stage 5/5: the held-out actors answer", flush=True)
    results: dict[str, dict[str, float]] = {}
    for name, cli in runs.items():
        cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
        results[name] = dict(cli.model.test_results["ravdess"])
        write_test_results(cli.trainer, cli.model, trained_here=True)
    clock.lap("tests")
    labels = held_out_labels(prepared)
    chance = chance_scores(labels, list(runs[SFT_ROW].datamodule.class_names))
    print(f"\n[demo] held-out actors ({len(labels)} clips; runs: "
          + ", ".join(str(cli.trainer.log_dir) for cli in runs.values()) + "):")
    print(comparison_table(results, chance))
    if write_report:
        from emorl.report import write_report as report

        report([Path(cli.trainer.log_dir) for cli in runs.values()], REPORT_DIR)
        clock.lap("report")
        print(f"[demo] report: {REPORT_DIR / 'report.md'} (report.csv and the figures beside it)")
    print(clock.summary(), flush=True)
    return {**results, "chance": chance}


def held_out_labels(prepared: Path, fold: int = 1) -> list[str]:
    """The held-out actors' labels (the fold's test rows), in order."""
    from emorl.data.manifest import fold_path, load_prepared_corpus, read_manifest

    corpus = load_prepared_corpus(prepared)
    return [row["label"] for row in read_manifest(fold_path(prepared, corpus.name, fold, "test"))]


def run_demo(data_root: Path, config: str = ACOUSTIC_CONFIG, max_epochs: int | None = None,
             verbose: bool = False) -> dict:
    """``emorl demo --config``: the demo corpus (once), then fit, test and print one config's table.

    Returns ``{test_set: {metric: value}}``.
    """
    from emorl.console import quiet_console
    from emorl.lightning_cli import EmorlCLI, resolve_config
    from emorl.metrics import format_table

    pin_threads()
    quiet_console(verbose)
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


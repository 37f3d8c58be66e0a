"""``emorl data ...``, ``emorl zoo ...`` and ``emorl demo``: argparse front-ends over the library functions.

:func:`build_parser` is the one place their options and help are written (``emorl --help`` reads
it too, through :func:`subcommand_help`); each runner imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from emorl.demo import ACOUSTIC_CONFIG



def _data_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="prepare, import, synthesise and check corpora")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    prep = dsub.add_parser("prepare", help="native corpus layout -> prepared manifests and EmoBox folds")
    prep.add_argument("corpus", choices=["meld", "iemocap", "ravdess", "savee"])
    prep.add_argument("--root", required=True, type=Path, help="the corpus as downloaded (native layout)")
    prep.add_argument("--out", required=True, type=Path, help="output folder of the prepared corpus")
    prep.add_argument("--workers", type=int, default=1, help="processes probing clips (MELD decodes every mp4)")
    prep.add_argument("--wav-dir", type=Path, help="MELD only: folder of already extracted dia{D}_utt{U}.wav")
    prep.add_argument("--transcripts", type=Path, help="RAVDESS only: statement<TAB>text file (default ROOT/transcripts.tsv)")

    imp = dsub.add_parser("import-emobox", help="any EmoBox manifest -> prepared corpus")
    imp.add_argument("--manifest", required=True, type=Path, help="EmoBox data/<corpus>/<corpus>.jsonl")
    imp.add_argument("--audio-root", required=True, type=Path, help="folder the manifest's wav paths are relative to")
    imp.add_argument("--out", required=True, type=Path)
    imp.add_argument("--name", help="corpus name (default: the manifest's dataset field)")
    imp.add_argument("--label-map", type=Path, help="EmoBox label_map.json (default: beside the manifest)")
    imp.add_argument("--folds", type=Path, help="folder holding EmoBox's fold_K/ folders (default: beside the manifest)")

    track2 = dsub.add_parser("track2", help="EmoBox cross-corpus test set: 4 classes, 240 balanced clips")
    track2.add_argument("--prepared", required=True, type=Path, help="a prepared corpus folder")
    track2.add_argument("--selection", required=True, type=Path, help="EmoBox data/track2/<CORPUS>_selected_balenced.jsonl")
    track2.add_argument("--out", required=True, type=Path)
    track2.add_argument("--corpus", choices=["meld", "iemocap", "ravdess", "savee"], help="default: from the prepared corpus")

    synth = dsub.add_parser("synth", help="render the embedded demo corpus with espeak-ng (RAVDESS layout)")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--actors", type=int, default=8)
    synth.add_argument("--sentences", type=int, default=4, help="sentences per emotion")
    synth.add_argument("--seed", type=int, default=0)

    check = dsub.add_parser("check", help="report unreadable, empty, silent, NaN and over-long clips")
    check.add_argument("prepared", type=Path, help="a prepared corpus folder")
    check.add_argument("--max-seconds", type=float, default=30.0, help="clips above this are reported as too long")
    check.add_argument("--strict", action="store_true", help="exit non-zero on warnings too (truncated, clipping, too long, ...)")

    prosody = dsub.add_parser("prosody", help="measure pitch, energy, rate, pauses, voice quality; bins + captions")
    prosody.add_argument("prepared", type=Path, help="a prepared corpus folder (its manifests get a prosody field)")
    prosody.add_argument("--workers", type=int, default=1, help="processes measuring clips (pYIN is the slow part)")
    prosody.add_argument("--overwrite", action="store_true", help="measure again clips that already have measures")

    cot = dsub.add_parser("cot", help="EmotionCoT rationales for the training rows (template or local LM), filtered")
    cot.add_argument("prepared", type=Path, help="a prepared corpus folder, measured by `emorl data prosody`")
    cot.add_argument("--writer", choices=["template", "lm"], default="template", help="template (no model) or lm")
    cot.add_argument("--model", type=Path, help="--writer lm: a local instruction-tuned causal LM folder")
    cot.add_argument("--dtype", default="bfloat16", help="--writer lm: float32 | bfloat16 | float16")
    cot.add_argument("--device", default="cpu", help="--writer lm: cpu, cuda, cuda:1, ...")
    cot.add_argument("--batch-size", type=int, default=8, help="--writer lm: prompts per generate call")
    cot.add_argument("--max-new-tokens", type=int, default=400, help="--writer lm: reply length (200 words ~ 270 tokens)")
    cot.add_argument("--temperature", type=float, default=0.7, help="--writer lm: 0 = greedy")
    cot.add_argument("--seed", type=int, default=0, help="template sentence draws / LM sampling")
    cot.add_argument("--min-words", type=int, default=20, help="shorter rationales are rejected")
    cot.add_argument("--fold", type=int, help="only this fold's training rows (default: the training rows of every fold)")
    cot.add_argument("--include-valid", action="store_true", help="also the rows of the valid split files (MELD's dev)")
    cot.add_argument("--overwrite", action="store_true", help="replace rationales the rows already have")
    cot.add_argument("--allow-no-prosody", action="store_true", help="write rationales for a corpus without prosody")

    from emorl.data import hf_export, hf_import  # light modules: `datasets` is imported when they run

    hf_import.add_parser(dsub)
    hf_export.add_parser(dsub)


def _zoo_parser(sub: argparse._SubParsersAction) -> None:
    zoo = sub.add_parser("zoo", help="frozen speech encoders: list the zoo, build tiny stand-ins")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="COMMAND")
    zsub.add_parser("list", help="zoo models, EmoBox UA/WA/F1, where each is found locally")
    tiny = zsub.add_parser("tiny", help="write a tiny random model of a zoo architecture (tests, smoke runs)")
    tiny.add_argument("name", help="zoo name (emorl zoo list) or s3prl:hubert_local | s3prl:wavlm_local")
    tiny.add_argument("--out", required=True, type=Path)
    tiny.add_argument("--seed", type=int, default=0)


def _run_zoo(args: argparse.Namespace) -> int:
    from emorl import tiny_models, zoo

    if args.zoo_command == "list":
        return zoo.list_main()
    return tiny_models.tiny_main(args.name, args.out, seed=args.seed)


def _demo_parser(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser("demo", help="the main job on the embedded demo corpus, end to end")
    demo.add_argument("--data-root", type=Path, default=Path("data/demo"), help="where the demo corpus goes")
    demo.add_argument("--config", help="run this one config instead of EMO-RL (e.g. " + ACOUSTIC_CONFIG + ")")
    demo.add_argument("--max-epochs", type=int, help="override trainer.max_epochs (of --config, or of the SFT warm start)")
    demo.add_argument("--grpo-steps", type=int, help="override the GRPO stages' trainer.max_steps")
    demo.add_argument("--seed", type=int, default=0, help="seed of the hearing, SFT and GRPO stages (default 0)")
    demo.add_argument("--verbose", action="store_true", help="show every library message (default: emorl's lines, "
                      "progress bars, stage times and the table)")


def _run_data(args: argparse.Namespace) -> int:
    if getattr(args, "hf_run", None):  # import-hf / export-hf: emorl/data/hf_{import,export}.py
        return args.hf_run(args)
    if args.data_command == "prepare":
        from emorl.data.corpora import PREPARERS

        options = {"workers": args.workers}
        if args.wav_dir is not None:
            if args.corpus != "meld":
                raise ValueError("--wav-dir is for MELD only")
            options["wav_dir"] = args.wav_dir
        if args.transcripts is not None:
            if args.corpus != "ravdess":
                raise ValueError("--transcripts is for RAVDESS only")
            options["transcripts"] = args.transcripts
        PREPARERS[args.corpus](args.root, args.out, **options)
    elif args.data_command == "import-emobox":
        from emorl.data.corpora import import_emobox

        import_emobox(args.manifest, args.audio_root, args.out, name=args.name,
                      label_map=args.label_map, folds_dir=args.folds)
    elif args.data_command == "track2":
        from emorl.data.corpora import make_track2

        make_track2(args.prepared, args.selection, args.out, corpus=args.corpus)
    elif args.data_command == "synth":
        from emorl.data.synth import synthesize

        summary = synthesize(args.out, actors=args.actors, sentences_per_emotion=args.sentences, seed=args.seed)
        print(summary)
    elif args.data_command == "check":
        from emorl.data.check import main_check

        return main_check(args.prepared, args.max_seconds, strict=args.strict)
    elif args.data_command == "prosody":
        from emorl.prosody.corpus import main_prosody

        return main_prosody(args.prepared, workers=args.workers, overwrite=args.overwrite)
    elif args.data_command == "cot":
        from emorl.data.cot import main_cot

        return main_cot(args.prepared, writer=args.writer, model=args.model, dtype=args.dtype, device=args.device,
                        batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                        seed=args.seed, min_words=args.min_words, fold=args.fold, include_valid=args.include_valid,
                        overwrite=args.overwrite, allow_no_prosody=args.allow_no_prosody)
    return 0


def _export_parser(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="a run's checkpoint -> Hugging Face model folder (or PEFT adapter) + model card")
    export.add_argument("--config", required=True, type=Path, help="the run's config (best: its run folder's config.yaml)")
    export.add_argument("--ckpt_path", type=Path, help="the run's checkpoint (.ckpt file); none for a zero-shot config")
    export.add_argument("--out", required=True, type=Path, help="the folder to write (must not exist, see --overwrite)")
    export.add_argument("--adapter", action="store_true", help="write a PEFT adapter folder instead of merged weights")
    export.add_argument("--hub-id", help="the Hugging Face id to publish under: named in the card, `hf upload` printed")
    export.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], help="weights dtype (default: the base's)")
    export.add_argument("--base-model", help="the base model folder or zoo name, when the config's has moved")
    export.add_argument("--results", type=Path, help="a test_results.json for the card (default: found beside the run)")
    export.add_argument("--max-shard-size", default="5GB", help="safetensors shard size (default 5GB)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")


def _report_parser(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="runs -> report.md / report.csv beside EMO-RL's published numbers, figures")
    report.add_argument("runs", nargs="+", type=Path, help="run folders (runs/<name>/version_N)")
    report.add_argument("--out", required=True, type=Path, help="folder for report.md, report.csv and the PNGs")


def _checkpoint_parser(sub: argparse._SubParsersAction) -> None:
    checkpoint = sub.add_parser("checkpoint", help="sharded (FSDP2) checkpoints -> one file for one device")
    csub = checkpoint.add_subparsers(dest="checkpoint_command", required=True, metavar="COMMAND")
    consolidate = csub.add_parser("consolidate", help="a sharded checkpoint folder -> one trainable-weights .ckpt file")
    consolidate.add_argument("folder", type=Path, help="a run's sharded checkpoint (checkpoints/last.ckpt/, a folder)")
    consolidate.add_argument("--out", required=True, type=Path, help="the .ckpt file to write")
    consolidate.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def _run_checkpoint(args: argparse.Namespace) -> int:
    from emorl.models.sharded_checkpoints import main_consolidate

    return main_consolidate(args.folder, args.out, overwrite=args.overwrite)


def _run_sharing(args: argparse.Namespace) -> int:
    if args.command == "export":
        from emorl.export.command import run_export

        return run_export(args)
    from emorl.report.command import run_report

    return run_report(args)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``emorl data | zoo | demo | export | report | plan | checkpoint`` (every option and help text of these commands)."""
    parser = argparse.ArgumentParser(prog="emorl")
    sub = parser.add_subparsers(dest="command", required=True)
    _data_parser(sub)
    _zoo_parser(sub)
    _demo_parser(sub)
    _export_parser(sub)
    _report_parser(sub)
    from emorl.plan.command import add_parser as _plan_parser  # light: yaml, no torch

    _plan_parser(sub)
    _checkpoint_parser(sub)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)


def subcommand_help(parser: argparse.ArgumentParser) -> dict[str, tuple[str, dict[str, str]]]:
    """``{command: (help, {subcommand: help})}`` read from :func:`build_parser`'s parser."""
    commands = _subparsers(parser)
    helps = {choice.dest: choice.help or "" for choice in commands._choices_actions}
    table = {}
    for name, child in commands.choices.items():
        grandchildren = _subparsers(child)
        children = {c.dest: c.help or "" for c in grandchildren._choices_actions} if grandchildren else {}
        table[name] = (helps.get(name, ""), children)
    return table


#: The commands this module runs (``emorl.cli`` dispatches them here).
COMMANDS = ("data", "zoo", "demo", "export", "report", "plan", "checkpoint")


def run_command(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    from emorl.log_setup import configure_logging

    configure_logging()  # emorl's INFO lines (a --log-level given to `emorl` is kept)
    try:
        if args.command == "data":
            return _run_data(args)
        if args.command == "zoo":
            return _run_zoo(args)
        if args.command in ("export", "report"):
            return _run_sharing(args)
        if args.command == "plan":
            from emorl.plan.command import run_plan

            return run_plan(args)
        if args.command == "checkpoint":
            return _run_checkpoint(args)
        from emorl.demo import run_demo, run_emorl_demo
        from emorl.errors import verbose

        args.verbose = args.verbose or verbose()  # `emorl --verbose demo`: cli.main takes the flag out first
        if args.config:
            run_demo(args.data_root, args.config, args.max_epochs, verbose=args.verbose)
        else:
            run_emorl_demo(args.data_root, args.max_epochs, args.grpo_steps, seed=args.seed, verbose=args.verbose)
        return 0
    except (OSError, ValueError, RuntimeError, LookupError) as err:  # ours name the file and the fix
        from emorl.errors import report

        return report(args.command, err)

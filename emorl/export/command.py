"""``emorl export`` (its options: :mod:`emorl.commands`): a run's checkpoint -> a Hugging Face model folder (or a PEFT adapter) with a model card.

    emorl export --config runs/emorl_esr/version_0/config.yaml \\
                 --ckpt_path runs/emorl_esr/version_0/checkpoints/last.ckpt --out exported/emorl_esr
    emorl export ... --adapter --out exported/emorl_esr-lora       # adapter_config.json + adapter_model.safetensors
    emorl export ... --hub-id me/qwen2-audio-emorl-esr             # id in the card, prints the `hf upload` command
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


from emorl.export.card import CardFacts, model_card
from emorl.export.source import ExportError, ExportSource, load_source
from emorl.export.weights import (
    DTYPE_NAMES,
    checkpoint_dtype,
    load_trained,
    merged_model,
    save_adapter,
    save_merged,
)
from emorl.results import RESULTS_FILE, training_run_of

METHODS = {"SFTLALM": "SFT", "GRPOLALM": "GRPO", "ZeroShotLALM": "zero-shot"}


def find_results(source: ExportSource, explicit: Path | None) -> dict | None:
    """The test results of this checkpoint: ``--results``, else a ``test_results.json`` of the
    checkpoint's training run or of a test run of the same name that used this checkpoint."""
    if explicit is not None:
        return json.loads(explicit.read_text(encoding="utf-8"))
    if source.checkpoint_path is None:
        return None
    run = Path(training_run_of(source.checkpoint_path))
    candidates = [run / RESULTS_FILE] + sorted(run.parent.glob(f"*/{RESULTS_FILE}"), reverse=True)
    target = source.checkpoint_path.resolve()
    for path in candidates:
        if not path.is_file():
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        used = record.get("checkpoint")
        if (used and Path(used).resolve() == target) or (path.parent == run and record.get("training_run")):
            return record
    return None


def base_identity(model: str) -> tuple[str, str]:
    """``(base_model for the card, licence)``: a zoo name -> its hub id and licence; a folder -> itself."""
    from emorl import zoo

    try:
        card = zoo.load_card(model)
        return card.hub_id, card.licence
    except zoo.ModelNotFoundError:
        card = zoo.card_for_path(zoo.resolve(model))
        return model, card.licence if card else "other"


def prepare_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing folder unless ``overwrite``; then start from an empty one."""
    if out.exists():
        if not overwrite:
            raise ExportError(f"{out} exists; pass --overwrite to replace it (or choose another --out)")
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.mkdir(parents=True)


def export_model(config: Path, ckpt_path: Path | None, out: Path, adapter: bool = False, hub_id: str | None = None,
                 dtype: str | None = None, base_model: str | None = None, results: Path | None = None,
                 max_shard_size: str = "5GB", overwrite: bool = False) -> Path:
    """Write the folder; returns its path. Errors are :class:`ExportError` with the fix in the message."""
    from emorl.lalm import load_backbone
    from emorl.lalm.backbone import detect_family
    from emorl.zoo import resolve

    source = load_source(config, ckpt_path, base_model)
    base = Path(resolve(source.base_model))
    family = detect_family(base)
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists; pass --overwrite to replace it (or choose another --out)")
    backbone = load_backbone(base, dtype="float32", attn_implementation="eager", lora=source.lora,
                             train_projector=source.train_projector, full_finetune=source.full_finetune)
    load_trained(backbone, source)
    prepare_out(out, overwrite)
    if adapter:
        save_adapter(backbone, base, out, family)
    else:
        target = {v: k for k, v in DTYPE_NAMES.items()}[dtype] if dtype else checkpoint_dtype(base)
        save_merged(merged_model(backbone, target), base, out, family, target, max_shard_size)
    card_base, licence = base_identity(source.base_model)
    record = find_results(source, results)
    facts = CardFacts(
        name=hub_id or out.name, family=family, base_model=card_base, license=licence,
        method=method_name(source), prompt_format=source.prompt_format, class_names=source.class_names,
        system_prompt=source.init_args.get("system_prompt", "You are a helpful assistant."),
        max_new_tokens=int(source.init_args.get("eval_max_new_tokens") or source.init_args.get("max_new_tokens") or 256),
        config_text=source.config_text, adapter=adapter, results=record,
        datasets=sorted((record or {}).get("test_sets", {})))
    (out / "README.md").write_text(model_card(facts, hub_id or str(out)), encoding="utf-8")
    return out


def method_name(source: ExportSource) -> str:
    """``GRPO, esr prompt, rewards format_esr + eswr, LoRA r 8`` and the like."""
    kind = METHODS.get(source.class_path.rsplit(".", 1)[1], source.class_path)
    parts = [kind, f"{source.prompt_format} prompt"]
    rewards = source.init_args.get("rewards")
    if kind == "GRPO":
        names = [r.get("name") for r in rewards] if rewards else ["format_esr", "eswr"]
        parts.append("rewards " + " + ".join(names))
    if source.lora:
        parts.append(f"LoRA r {source.lora.get('r', 8)}")
    elif source.full_finetune:
        parts.append("full fine-tuning")
    return ", ".join(parts)


def run_export(args: argparse.Namespace) -> int:
    """The command: export, then say where it went and how to publish it."""
    out = export_model(args.config, args.ckpt_path, args.out, adapter=args.adapter, hub_id=args.hub_id,
                       dtype=args.dtype, base_model=args.base_model, results=args.results,
                       max_shard_size=args.max_shard_size, overwrite=args.overwrite)
    kind = "PEFT adapter" if args.adapter else "model folder"
    print(f"wrote the {kind} to {out} (model card: {out / 'README.md'})")
    if args.hub_id:
        print(f"publish it with:\n  hf upload {args.hub_id} {out} . --repo-type model")
    return 0


__all__ = ["ExportError", "export_model", "run_export"]

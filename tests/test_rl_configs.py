"""The EMO-RL paper's GRPO rows as configs (Tables 1 and 3), and Table 2's cross-corpus test config.

Every Table 1 / Table 3 config parses with the paper's settings, names the row's prompt format and reward
list, and differs from ``configs/emorl_esr.yaml`` (the ESWR + ESR row) only where its row does; its
``GRPOLALM`` scores answers as the row says. ``configs/emorl/meld_cross.yaml`` runs ``emorl test`` on
tiny track-2 sets with the checkpoint of a 1-step ``emorl fit`` of a MELD training config.
"""

import json
from pathlib import Path

import pytest
import torch
import yaml

from emorl import tiny_models
from emorl.cli import main
from emorl.lightning_cli import EmorlCLI
from emorl.data.corpora.emobox import make_track2
from emorl.labels import CROSS_CORPUS_LABELS, get_label_set
from emorl.prompts import ESR_TAGS, target_text
from emorl.rl.rewards import RewardSet
from tests.corpus_factory import make_tiny_corpus

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "configs" / "emorl"
CROSS = FOLDER / "meld_cross.yaml"
MELD = tuple(get_label_set("meld").classes)
TRACK2 = list(CROSS_CORPUS_LABELS.classes)
FORMATS = ("ir", "eur", "esr")


def _table1() -> dict[str, tuple[str, list[str], str]]:
    """config path (relative) -> (prompt format, reward names, corpus) for Table 1's GRPO rows."""
    rows = {}
    for corpus in ("meld", "iemocap"):
        for acc in ("bcr", "eswr"):
            for fmt in FORMATS:
                path = "configs/emorl_esr.yaml" if (acc, fmt, corpus) == ("eswr", "esr", "meld") else \
                    f"configs/emorl/grpo_{acc}_{fmt}_{corpus}.yaml"
                rows[path] = (fmt, [f"format_{fmt}", acc], corpus)
    return rows


#: Table 3 (MELD): format reward only (its own prompt format), accuracy reward only (IR prompts)
TABLE3 = {
    "configs/emorl/ablation_format_ir_only_meld.yaml": ("ir", ["format_ir"], "meld"),
    "configs/emorl/ablation_format_eur_only_meld.yaml": ("eur", ["format_eur"], "meld"),
    "configs/emorl/ablation_format_esr_only_meld.yaml": ("esr", ["format_esr"], "meld"),
    "configs/emorl/ablation_bcr_only_meld.yaml": ("ir", ["bcr"], "meld"),
    "configs/emorl/ablation_eswr_only_meld.yaml": ("ir", ["eswr"], "meld"),
}
ROWS = {**_table1(), **TABLE3}


def test_configs_emorl_holds_exactly_the_table_rows_and_the_cross_config():
    assert len(_table1()) == 12 and len(ROWS) == 17
    shipped = {str(p.relative_to(ROOT)) for p in FOLDER.glob("*.yaml")}
    assert shipped == {p for p in ROWS if p.startswith("configs/emorl/")} | {"configs/emorl/meld_cross.yaml"}
    assert (ROOT / "configs" / "emorl_esr.yaml").is_file()  # ESWR + ESR on MELD stays where it is
    lora = {str(p.relative_to(ROOT)) for p in (FOLDER / "lora").glob("*.yaml")}
    assert lora == {lora_variant(p) for p in ROWS}  # one single-GPU LoRA variant per row


def lora_variant(rel: str) -> str:
    """The single-GPU LoRA variant of a paper config: ``configs/<family>/lora/<file name>``."""
    folder = {"configs/emorl_esr.yaml": "configs/emorl", "configs/emotionthinker_ptr.yaml": "configs/emotionthinker"}
    return f"{folder.get(rel, str(Path(rel).parent))}/lora/{Path(rel).name}"


def _parse(path: Path, *extra: str):
    return EmorlCLI(args=["--config", str(path), *extra], run=False, parse_only=True).config


@pytest.mark.parametrize("rel", sorted(ROWS), ids=lambda p: Path(p).stem)
def test_a_row_parses_with_the_paper_settings_and_its_prompt_format_and_rewards(rel):
    fmt, rewards, corpus = ROWS[rel]
    path = ROOT / rel
    config = _parse(path)
    init = config.model.init_args
    assert config.model.class_path == "emorl.models.grpo.GRPOLALM"
    assert init.prompt_format == fmt
    reward_set = RewardSet.from_config(init.rewards)
    assert reward_set.names == rewards and all(spec.weight == 1.0 for spec in reward_set.specs)
    # EMO-RL 4.2: G 6, lr 1e-6, temperature 1.0, per-device batch 1, accumulation 2, 300 steps
    assert (init.num_generations, init.lr, init.temperature) == (6, 1e-6, 1.0)
    assert (config.data.batch_size, init.accumulate_grad_batches, config.trainer.max_steps) == (1, 2, 300)
    assert (init.gamma, init.alpha_start, init.alpha_end) == (0.7, 1.0, 0.0)
    assert_papers_hardware(config)
    assert config.data.data_dir == f"data/{corpus}" and config.data.fold == 1
    assert config.trainer.logger.init_args.name == path.stem  # runs/<file name>/version_N
    head = "\n".join(path.read_text().splitlines()[:8])
    assert f"emorl fit --config {rel}\n" in head + "\n"
    assert f"emorl test --config {rel} --ckpt_path runs/{path.stem}/version_N/checkpoints/" in head


def assert_papers_hardware(config) -> None:
    """All weights trained (fp32 masters, bf16 compute), sharded with FSDP2 over the paper's 8 GPUs."""
    init, trainer = config.model.init_args, config.trainer
    assert (init.full_finetune, init.lora, init.dtype, init.gradient_checkpointing) == (True, None, "bfloat16", True)
    assert (trainer.accelerator, trainer.devices, trainer.num_nodes) == ("gpu", 8, 1)
    assert trainer.strategy.class_path == "emorl.strategy.FSDP2Strategy"


#: what a single-GPU LoRA variant may change from its paper config (and the learning rate: 10x, docs/rl.md)
LORA_CHANGES = {"trainer.devices", "trainer.num_nodes", "trainer.strategy.class_path", "model.init_args.lora",
                "model.init_args.full_finetune", "model.init_args.lr", "trainer.logger.init_args.name"}


def assert_lora_variant_of(rel: str) -> None:
    """``rel``'s LoRA variant is its row on one GPU: the default adapter, lr x 10, runs/<name>_lora, all else equal."""
    variant = lora_variant(rel)
    full, lora = (_flat(yaml.safe_load((ROOT / path).read_text())) for path in (rel, variant))
    differs = {key.split(".lora.")[0] + ".lora" if ".lora." in key else key
               for key in full.keys() | lora.keys() if full.get(key, "<absent>") != lora.get(key, "<absent>")}
    assert differs == LORA_CHANGES, sorted(differs ^ LORA_CHANGES)
    assert (lora["trainer.devices"], lora["trainer.accelerator"], lora["model.init_args.full_finetune"]) == (1, "gpu", False)
    assert lora["model.init_args.lr"] == pytest.approx(10 * full["model.init_args.lr"])
    assert lora["trainer.logger.init_args.name"] == full["trainer.logger.init_args.name"] + "_lora"
    adapter = dict(_parse(ROOT / variant).model.init_args.lora)
    adapter.pop("target_modules", None)  # SFT's configs spell out the default targets
    assert adapter == {"r": 8, "alpha": 16, "dropout": 0.05}
    head = "\n".join((ROOT / variant).read_text().splitlines()[:10])
    assert f"emorl fit --config {variant}" in head and rel in head


@pytest.mark.parametrize("rel", sorted(ROWS), ids=lambda p: Path(p).stem)
def test_a_rows_lora_variant_is_the_same_row_on_one_gpu(rel):
    assert_lora_variant_of(rel)


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): tree}


@pytest.mark.parametrize("rel", sorted(p for p in ROWS if p.startswith("configs/emorl/")), ids=lambda p: Path(p).stem)
def test_a_row_differs_from_emorl_esr_only_in_prompt_format_rewards_run_name_and_corpus(rel):
    reference = _flat(yaml.safe_load((ROOT / "configs" / "emorl_esr.yaml").read_text()))
    row = _flat(yaml.safe_load((ROOT / rel).read_text()))
    differs = {key for key in reference.keys() | row.keys() if reference.get(key, "<absent>") != row.get(key, "<absent>")}
    allowed = {"model.init_args.prompt_format", "model.init_args.rewards", "trainer.logger.init_args.name"}
    if ROWS[rel][2] == "iemocap":  # EmoBox's IEMOCAP protocol, as configs/sft/sft_ir_iemocap.yaml
        sft = yaml.safe_load((ROOT / "configs" / "sft" / "sft_ir_iemocap.yaml").read_text())["data"]
        data = yaml.safe_load((ROOT / rel).read_text())["data"]
        for key in ("data_dir", "fold", "val_fraction", "val_group_by", "max_seconds", "duration_mode"):
            assert data[key] == sft[key], key
        allowed |= {"data.data_dir", "data.val_fraction", "data.val_group_by"}
    assert differs <= allowed, sorted(differs - allowed)
    assert "model.init_args.rewards" in differs or ROWS[rel][1] == ["format_esr", "eswr"]


@pytest.fixture(scope="module")
def tiny_lalm(tmp_path_factory) -> Path:
    return tiny_models.build_tiny("qwen2-audio-7b-instruct", tmp_path_factory.mktemp("rl_configs") / "tiny", seed=0)


@pytest.fixture(scope="module")
def tiny_meld(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("rl_meld") / "meld", name="meld", labels=MELD,
                            per_speaker_label=1, with_valid=True)


def _answer(fmt: str, label: str) -> str:
    return target_text(fmt, label, rationale="a low, slow voice", structured={tag: "x" for tag in ESR_TAGS})


@pytest.mark.parametrize("rel", sorted(ROWS), ids=lambda p: Path(p).stem)
def test_a_rows_grpo_module_asks_its_format_and_scores_answers_as_its_row_says(rel, tiny_lalm, tiny_meld, tmp_path,
                                                                             monkeypatch):
    fmt, rewards, _ = ROWS[rel]
    monkeypatch.chdir(tmp_path)
    cli = EmorlCLI(args=["--config", str(ROOT / rel), "--model.init_args.model", str(tiny_lalm),
                         "--model.init_args.dtype", "float32", "--data.data_dir", str(tiny_meld.root),
                         "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto"],
                   run=False)
    module = cli.model
    assert module.prompts.format.name == fmt and module.rewards.names == rewards
    assert "<answer>emotion</answer>" in module.prompts.question("k")
    n_format = sum(name.startswith("format_") for name in rewards)
    other = {"ir": "eur", "eur": "ir", "esr": "eur"}[fmt]  # an answer in a format this row does not ask for
    answers = [_answer(fmt, "sad"), _answer(fmt, "sad"), _answer(other, "sad"), "sad"]
    total, parts = module.rewards(answers, ["sad", "happy", "sad", "sad"], module._context())
    # R = R_format + R_acc: right and well formed / wrong label, well formed / right label, other format / no tags
    # (IR's format reward needs the right label too, EMO-RL 3.3.1)
    wrong_but_well_formed = 0.0 if fmt == "ir" else n_format
    assert total.tolist() == [len(rewards), wrong_but_well_formed, len(rewards) - n_format, 0.0], parts


def test_the_cross_config_asks_the_four_track2_emotions_in_melds_order_on_the_track2_sets():
    config = _parse(CROSS)
    data = config.data
    assert sorted(data.classes) == sorted(TRACK2)
    assert list(data.classes) == [c for c in MELD if c in TRACK2]  # the training prompt's order, 3 options fewer
    assert data.data_dir == "data/meld" and data.include_own_test is False
    assert data.unknown_test_labels == "error"
    assert {name: spec["path"] for name, spec in data.test_sets.items()} == {
        name: f"data/{name}_track2" for name in ("ravdess", "savee", "iemocap")}
    # without --ckpt_path the model section is the ESWR + ESR row's single-GPU (LoRA) variant
    reference = yaml.safe_load((ROOT / "configs" / "emorl" / "lora" / "emorl_esr.yaml").read_text())["model"]
    ours = yaml.safe_load(CROSS.read_text())["model"]
    assert ours["class_path"] == reference["class_path"]
    for key, value in ours["init_args"].items():
        if key not in ("answers_to_log", "lr"):  # lr: no training here
            assert reference["init_args"][key] == value, key


def _track2_set(root: Path, corpus: str, labels) -> Path:
    """A tiny prepared ``corpus`` and its track-2 set (2 clips per shared emotion), through ``make_track2``."""
    prepared = make_tiny_corpus(root / corpus, name=corpus, labels=labels, speakers=("s1", "s2"),
                                per_speaker_label=1, test_speakers=("s2",))
    picks = []
    for row in prepared.rows():
        if row["label"] in TRACK2:
            stem = row["key"].removeprefix(f"{corpus}-")  # savee keys: savee-<speaker>-<stem>
            name = "/".join(stem.split("-", 1)) if corpus == "savee" else f"folder/{stem}"
            picks.append({"wav_filename": f"{name}.wav", "label": row["label"], "speaker": row["speaker"]})
    selection = root / f"{corpus.upper()}_selected_balenced.jsonl"
    selection.write_text("".join(json.dumps(pick) + "\n" for pick in picks))
    make_track2(prepared.root, selection, root / f"{corpus}_track2")
    return root / f"{corpus}_track2"


@pytest.fixture(scope="module")
def track2_sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rl_track2")
    return {
        "ravdess": _track2_set(root, "ravdess", ("neutral", "calm", "happy", "sad", "angry", "fear")),
        "savee": _track2_set(root, "savee", ("angry", "disgust", "happy", "neutral", "sad")),
        "iemocap": _track2_set(root, "iemocap", ("neutral", "happy", "angry", "sad")),
    }


def _fit_one_step(rel: str, tiny_lalm: Path, meld_root: Path, out: Path) -> tuple[Path, dict]:
    """``emorl fit`` of a MELD training config for 1 optimiser step on the tiny model; its last.ckpt."""
    config = yaml.safe_load((ROOT / rel).read_text())
    trainer = config["trainer"]
    trainer.pop("max_epochs", None)
    trainer.pop("val_check_interval", None)
    trainer.update(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                   enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                   default_root_dir=str(out / "fit"))
    trainer["callbacks"] = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                             "init_args": {"dirpath": str(out / "ckpt"), "save_last": True, "save_top_k": 0}}]
    init = config["model"]["init_args"]
    init.update(model=str(tiny_lalm), dtype="float32", gradient_checkpointing=False, max_new_tokens=6)
    if init.get("num_generations"):
        init.update(num_generations=2, eval_max_new_tokens=6)
    config["data"].update(data_dir=str(meld_root), num_workers=0)
    path = out / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["fit", "--config", str(path)])
    return out / "ckpt" / "last.ckpt", init


@pytest.mark.parametrize("rel", ["configs/emorl/lora/grpo_eswr_eur_meld.yaml", "configs/sft/lora/sft_ir_meld.yaml"],
                         ids=["grpo_eswr_eur_meld", "sft_ir_meld"])
def test_the_cross_config_tests_a_meld_checkpoint_zero_shot_on_every_track2_set(rel, tiny_lalm, tiny_meld,
                                                                              track2_sets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ckpt, trained = _fit_one_step(rel, tiny_lalm, tiny_meld.root, tmp_path)
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["state_dict"] and all("lora_" in key for key in saved["state_dict"])  # LoRA weights only
    assert saved["hyper_parameters"]["class_names"] == list(MELD)  # trained on MELD's 7 emotions
    # one tiny step barely moves the adapter (GRPO: often not at all): give it weights no base model has
    generator = torch.Generator().manual_seed(0)
    for key, value in saved["state_dict"].items():
        saved["state_dict"][key] = 0.05 * torch.randn(value.shape, generator=generator).to(value.dtype)
    torch.save(saved, ckpt)

    cross = yaml.safe_load(CROSS.read_text())
    cross["trainer"].update(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False)
    cross["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "runs")
    cross["data"].update(data_dir=str(tiny_meld.root), num_workers=0)
    for name, spec in cross["data"]["test_sets"].items():
        spec["path"] = str(track2_sets[name])
    path = tmp_path / "cross.yaml"
    path.write_text(yaml.safe_dump(cross))
    row = Path(rel).stem + "_cross"
    cli = EmorlCLI(args=["test", "--config", str(path), "--ckpt_path", str(ckpt),
                         "--trainer.logger.init_args.name", row])

    model = cli.model
    # the checkpoint's own model (class, prompt format) over this config's ESWR + ESR GRPO section ...
    assert type(model).__name__ == ("GRPOLALM" if "grpo" in rel else "SFTLALM")
    assert model.prompts.format.name == trained["prompt_format"] != cross["model"]["init_args"]["prompt_format"]
    # ... asked with the 4 track-2 options only
    assert model.prompts.class_names == ["neutral", "happy", "sad", "angry"]
    assert "neutral, happy, sad, angry." in model.prompts.question("k")
    # the checkpoint's LoRA weights are the ones tested
    state = model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in saved["state_dict"].items())

    metrics = cli.trainer.callback_metrics
    for name in ("ravdess", "savee", "iemocap"):
        for metric in ("ua", "wa", "f1", "parse_rate"):
            assert f"test/{name}/{metric}" in metrics, (name, metric)
        assert 0.0 <= float(metrics[f"test/{name}/wa"]) <= 1.0
        rows = [json.loads(line) for line in
                (tmp_path / "runs" / row / "version_0" / "predictions" / f"{name}.jsonl").read_text().splitlines()]
        assert len(rows) == 4 * 2 and {r["label"] for r in rows} == set(TRACK2)  # every track-2 clip, once
        assert {r["prediction"] for r in rows} <= set(TRACK2) | {None}
    assert set(model.test_results) == {"ravdess", "savee", "iemocap"}  # the printed table; no MELD test


def test_docs_rl_maps_every_row_to_its_config():
    text = (ROOT / "docs" / "rl.md").read_text()
    section = text[text.index("## The paper's tables, row by row"):]
    named = [*ROWS, "configs/emorl/meld_cross.yaml", "configs/sft/sft_ir_meld.yaml", "configs/sft/sft_ir_iemocap.yaml",
             "configs/lalm/qwen2_audio_zeroshot_direct.yaml", "configs/lalm/qwen2_audio_zeroshot_cot.yaml"]
    for rel in named:
        assert rel in section, rel
    for stem in ("sft_ir_meld", "grpo_bcr_ir_meld", "grpo_eswr_ir_meld", "grpo_eswr_eur_meld", "emorl_esr"):
        assert (f"emorl test --config configs/emorl/meld_cross.yaml --ckpt_path runs/{stem}/version_N/checkpoints/"
                in section), stem  # Table 2's rows

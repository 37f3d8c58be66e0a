"""`emorl export`: the exported folders answer like `emorl predict` in a process that never imports emorl.

Both families' tiny models, LoRA (with a trained projector) and full fine-tuning, each trained for
2 SFT steps; the merged folder of every run and the adapter of every LoRA run are loaded by the
model card's own snippet (transformers, + peft for the adapter) in one fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
import yaml
from safetensors import safe_open
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emorl.cli import main
from emorl.export import ExportError, export_model
from emorl.export.card import SNIPPET_CALL, extract_snippet
from tests.corpus_factory import make_tiny_corpus
from tests.export_runs import predict_run, emorl_test_run, train_run
from tests.lalm_fixtures import clips, tiny_model_dir

pytestmark = pytest.mark.slow
CASES = [("qwen2-audio", "lora"), ("qwen2-audio", "full"), ("qwen2.5-omni", "lora"), ("qwen2.5-omni", "full")]

FRESH_DRIVER = """
import json, sys
jobs = json.load(open(sys.argv[1]))
answers = {}
for name, code in jobs.items():
    scope = {"__name__": "snippet"}
    exec(code, scope)
    answers[name] = scope["ANSWERS"]
assert not any(m == "emorl" or m.startswith("emorl.") for m in sys.modules), "the snippet imported emorl"
print(json.dumps(answers))
"""


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    corpus = make_tiny_corpus(root / "corpus", per_speaker_label=1)
    clip_dir = root / "clips"
    clip_dir.mkdir()
    for i, clip in enumerate(clips((1.0, 2.5, 0.6), seed=3)):
        sf.write(clip_dir / f"clip{i}.wav", clip, 16000)
    return {"root": root, "corpus": corpus.root, "clips": clip_dir}


@pytest.fixture(scope="module")
def runs(work):
    return {case: train_run(*case, work["corpus"], work["root"]) for case in CASES}


def _shapes(folder: Path) -> dict:
    shapes = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), "pt") as handle:
            shapes.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})
    return shapes


@pytest.fixture(scope="module")
def exported(work, runs):
    """Every run exported (merged; LoRA runs also as adapters), and `emorl predict`'s answers."""
    folders, predicted = {}, {}
    for case, run in runs.items():
        family, mode = case
        shard = "200KB" if case == ("qwen2.5-omni", "full") else "5GB"  # one export in several shards
        folders[(family, mode, "merged")] = export_model(run.config, run.checkpoint,
                                                         work["root"] / "out" / f"{family}_{mode}", max_shard_size=shard)
        if mode == "lora":
            folders[(family, mode, "adapter")] = export_model(run.config, run.checkpoint, work["root"] / "out" /
                                                              f"{family}_{mode}_adapter", adapter=True)
        predicted[case] = predict_run(run, work["clips"])
    return folders, predicted


@pytest.fixture(scope="module")
def fresh_answers(work, exported):
    """The card snippets of every exported folder, run in one process without emorl on its path."""
    folders, _ = exported
    wavs = [str(p) for p in sorted(work["clips"].glob("*.wav"))]
    jobs = {}
    for key, folder in folders.items():
        code = extract_snippet((folder / "README.md").read_text())
        assert SNIPPET_CALL in code
        jobs["/".join(key)] = code.replace(SNIPPET_CALL, f"ANSWERS = {{p.rsplit('/', 1)[1][:-4]: recognise(p)[0] for p in {wavs!r}}}")
    for family in ("qwen2-audio", "qwen2.5-omni"):  # the untrained base, through the same snippet
        code = jobs[f"{family}/lora/merged"]
        out = str(folders[(family, "lora", "merged")])
        jobs[f"{family}/base"] = code.replace(f'MODEL = "{out}"', f'MODEL = "{tiny_model_dir(family)}"')
        assert jobs[f"{family}/base"] != code
    job_file = work["root"] / "jobs.json"
    job_file.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", FRESH_DRIVER, str(job_file)], capture_output=True, text=True,
                          env=env, cwd=work["root"], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_exported_folders_answer_like_emorl_predict_in_a_fresh_process(case, exported, fresh_answers):
    _, predicted = exported
    expected = {Path(k).stem: v for k, v in predicted[case].items()}
    assert len(expected) == 3
    kinds = ["merged", "adapter"] if case[1] == "lora" else ["merged"]
    for kind in kinds:
        assert fresh_answers["/".join((*case, kind))] == expected, kind
    assert all(text.strip() for text in expected.values())


@pytest.mark.parametrize("family", ["qwen2-audio", "qwen2.5-omni"])
def test_training_changed_the_answers(family, exported, fresh_answers):
    """Else the round trip could not tell the trained weights from the base's."""
    _, predicted = exported
    base = fresh_answers[f"{family}/base"]
    for mode in ("lora", "full"):
        assert {Path(k).stem: v for k, v in predicted[(family, mode)].items()} != base, mode


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_merged_folder_has_the_base_checkpoints_architecture_names_and_shapes(case, runs, exported):
    folders, _ = exported
    family, mode = case
    base, out = tiny_model_dir(family), folders[(family, mode, "merged")]
    config, base_config = (json.loads((p / "config.json").read_text()) for p in (out, base))
    assert config["architectures"] == base_config["architectures"]
    base_shapes = _shapes(base)
    if family == "qwen2.5-omni":
        base_shapes = {k: v for k, v in base_shapes.items() if k.startswith("thinker.")}
        assert config["enable_audio_output"] is False
    assert _shapes(out) == base_shapes
    for name in ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (out / name).is_file(), name
    # the merged weights differ from the base's: training moved them, and the export carried it over
    with safe_open(str(next(base.glob("*.safetensors"))), "pt") as b:
        key = next(k for k in b.keys() if "layers.0.self_attn.q_proj.weight" in k and "audio" not in k)
        base_q = b.get_tensor(key)
    index = out / "model.safetensors.index.json"
    shard = out / (json.loads(index.read_text())["weight_map"][key] if index.is_file() else "model.safetensors")
    with safe_open(str(shard), "pt") as e:
        assert not torch.equal(e.get_tensor(key), base_q)


def test_omni_processor_files_name_transformers_classes_only(exported):
    folders, _ = exported
    out = folders[("qwen2.5-omni", "lora", "merged")]
    text = " ".join(p.read_text() for p in out.glob("*.json"))
    assert "OmniAudioProcessor" not in text
    settings = json.loads((out / "preprocessor_config.json").read_text())
    assert settings["processor_class"] == "Qwen2_5OmniProcessor"
    assert settings["feature_extractor_type"] == "WhisperFeatureExtractor"
    assert "image_processor_type" in settings
    assert "torchvision" in (out / "README.md").read_text()


def test_lora_is_merged_in_float32_then_cast(runs, work):
    """The bf16 export's q_proj equals (W + B A * alpha / r) computed in fp32 from the checkpoint, cast to bf16."""
    run = runs[("qwen2-audio", "lora")]
    out = export_model(run.config, run.checkpoint, work["root"] / "out" / "bf16", dtype="bfloat16")
    state = torch.load(run.checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    prefix = "model.base_model.model.model.language_model.layers.0.self_attn.q_proj"
    lora_a, lora_b = state[f"{prefix}.lora_A.default.weight"], state[f"{prefix}.lora_B.default.weight"]
    name = "language_model.model.layers.0.self_attn.q_proj.weight"
    with safe_open(str(tiny_model_dir("qwen2-audio") / "model.safetensors"), "pt") as b:
        base = b.get_tensor(name).float()
    expected = (base + (lora_b.float() @ lora_a.float()) * (8 / 4)).to(torch.bfloat16)
    assert lora_b.abs().sum() > 0  # the adapter was trained: the merge changes the weight
    with safe_open(str(out / "model.safetensors"), "pt") as e:
        exported_weight = e.get_tensor(name)
    assert exported_weight.dtype == torch.bfloat16
    assert torch.equal(exported_weight, expected)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_model_card_front_matter_holds_the_runs_test_results(runs, work, capsys):
    run = runs[("qwen2-audio", "lora")]
    test_dir = emorl_test_run(run)
    record = json.loads((test_dir / "test_results.json").read_text())
    out = work["root"] / "out" / "card"
    assert _emorl(["export", "--config", str(run.config), "--ckpt_path", str(run.checkpoint), "--out", str(out),
                   "--hub-id", "someone/tiny-emorl"]) == 0
    printed = capsys.readouterr().out
    assert f"hf upload someone/tiny-emorl {out}" in printed
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["tiny"]
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["unweighted_accuracy"] == round(100 * record["test_sets"]["tiny"]["ua"], 2)
    assert metrics["accuracy"] == round(100 * record["test_sets"]["tiny"]["wa"], 2)
    assert meta["model-index"][0]["name"] == "someone/tiny-emorl"
    assert 'MODEL = "someone/tiny-emorl"' in card and "<answer>emotion</answer>" in card
    assert "class_path: emorl.models.sft.SFTLALM" in card  # the recipe


def test_test_results_json_holds_the_logged_metrics_checkpoint_and_training_run(runs):
    run = runs[("qwen2.5-omni", "lora")]
    test_dir = emorl_test_run(run)
    record = json.loads((test_dir / "test_results.json").read_text())
    assert record["checkpoint"] == str(run.checkpoint)
    assert record["training_run"] == str(run.run_dir)
    assert record["model_class"] == "emorl.models.sft.SFTLALM"
    events = EventAccumulator(str(test_dir)).Reload()
    for metric in ("ua", "wa", "f1", "parse_rate"):
        logged = events.Scalars(f"test/tiny/{metric}")[-1].value
        assert record["test_sets"]["tiny"][metric] == pytest.approx(logged, abs=1e-6)


def _emorl(args) -> int:
    """``emorl ARGS`` in this process; its exit code."""
    with pytest.raises(SystemExit) as stop:
        main(args)
    return stop.value.code


def _export_error(args, capsys) -> str:
    assert _emorl(["export", *args]) == 2  # emorl.errors.USER_ERROR_STATUS
    return capsys.readouterr().err


def test_clear_errors(runs, work, capsys, tmp_path):
    run = runs[("qwen2-audio", "lora")]
    common = ["--config", str(run.config), "--ckpt_path", str(run.checkpoint)]
    (tmp_path / "taken").mkdir()
    assert "exists; pass --overwrite" in _export_error([*common, "--out", str(tmp_path / "taken")], capsys)
    assert _emorl(["export", *common, "--out", str(tmp_path / "taken"), "--overwrite", "--adapter"]) == 0
    assert (tmp_path / "taken" / "adapter_config.json").is_file()

    other = yaml.safe_load(run.config.read_text())
    other["model"]["init_args"]["lora"] = {"r": 8, "alpha": 16}
    (tmp_path / "r8.yaml").write_text(yaml.safe_dump(other))
    err = _export_error(["--config", str(tmp_path / "r8.yaml"), "--ckpt_path", str(run.checkpoint),
                         "--out", str(tmp_path / "r8")], capsys)
    assert "do not fit the config's model" in err and not (tmp_path / "r8").exists()

    sharded = tmp_path / "sharded.ckpt"
    sharded.mkdir()
    err = _export_error(["--config", str(run.config), "--ckpt_path", str(sharded), "--out", str(tmp_path / "s")], capsys)
    assert "sharded checkpoint" in err and f"emorl checkpoint consolidate {sharded} --out" in err

    full = runs[("qwen2-audio", "full")]
    err = _export_error(["--config", str(full.config), "--ckpt_path", str(full.checkpoint), "--adapter",
                         "--out", str(tmp_path / "a")], capsys)
    assert "--adapter needs a LoRA run" in err

    with pytest.raises(ExportError, match="not an audio-language model"):
        config = {"model": {"class_path": "emorl.models.acoustic.AcousticBaseline"}}
        (tmp_path / "acoustic.yaml").write_text(yaml.safe_dump(config))
        export_model(tmp_path / "acoustic.yaml", run.checkpoint, tmp_path / "x")


def test_a_zero_shot_config_exports_the_base_model_unchanged(work, tmp_path):
    """No checkpoint: the options come from the corpus; every tensor is the base's, the card says so."""
    from tests.lalm_fixtures import REPO

    config = yaml.safe_load((REPO / "configs/lalm/qwen2_audio_zeroshot_cot.yaml").read_text())
    config["model"]["init_args"]["model"] = str(tiny_model_dir("qwen2-audio"))
    config["data"]["data_dir"] = str(work["corpus"])
    (tmp_path / "zs.yaml").write_text(yaml.safe_dump(config))
    out = export_model(tmp_path / "zs.yaml", None, tmp_path / "zs")
    base = tiny_model_dir("qwen2-audio") / "model.safetensors"
    with safe_open(str(base), "pt") as b, safe_open(str(out / "model.safetensors"), "pt") as e:
        assert set(b.keys()) == set(e.keys())
        assert all(torch.equal(b.get_tensor(k), e.get_tensor(k)) for k in b.keys())
    card = (out / "README.md").read_text()
    assert "zero-shot, cot prompt" in card and "The options are: neutral, happy, sad, angry." in card

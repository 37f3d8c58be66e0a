"""EmotionThinker end to end on a small demo corpus, through the shipped demo configs.

prosody -> rationales -> EmotionThinker-Base (1 epoch) -> SFT on the rationales (1 epoch, from the
base) -> GRPO-PTR with a tiny judge (from the SFT) -> ``emorl test`` with explanation evaluation.
Each stage starts from the previous one's checkpoint, as the docs' recipe says
(docs/emotionthinker.md); the assertions check what each stage must hand to the next.
"""

import json

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emorl import tiny_models, zoo
from emorl.lightning_cli import EmorlCLI
from emorl.commands import run_command
from emorl.data.corpora import prepare_ravdess
from emorl.data.synth import synthesize
from emorl.textlm import build_tiny_text_lm

pytestmark = [pytest.mark.slow, pytest.mark.espeak]
CONFIGS = zoo.ZOO_DIR.parent / "configs" / "demo"
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0", "--trainer.limit_train_batches", "4",
         "--data.batch_size", "8"]


def _config(tmp_path, name: str, edit) -> str:
    """A shipped config with ``edit(config)`` applied, written beside the test's files."""
    config = yaml.safe_load((CONFIGS / name).read_text())
    edit(config)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return str(path)


def _fit(config: str, *args: str) -> EmorlCLI:
    path = config if config.endswith(".yaml") and "/" in config else str(CONFIGS / config)
    cli = EmorlCLI(args=["--config", path, *args], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def _scalars(cli: EmorlCLI, tag: str) -> list[float]:
    return [event.value for event in EventAccumulator(cli.trainer.log_dir).Reload().Scalars(tag)]


def test_emotionthinker_stages_chain_on_the_demo_corpus(tmp_path, monkeypatch, espeak, capsys):
    monkeypatch.chdir(tmp_path)
    synthesize(tmp_path / "raw", actors=4, sentences_per_emotion=1)
    prepared = tmp_path / "prepared"
    prepare_ravdess(tmp_path / "raw", prepared)
    assert run_command(["data", "prosody", str(prepared), "--workers", "2"]) == 0
    assert run_command(["data", "cot", str(prepared)]) == 0
    cot = json.loads((prepared / "corpus.json").read_text())["cot"]
    assert cot["accepted"] > 0 and cot["accepted"] == cot["written"], cot

    model = tiny_models.build_tiny("qwen2-audio-7b-instruct", tmp_path / "tiny-qwen2-audio", seed=0)
    judge = build_tiny_text_lm(tmp_path / "tiny-judge")
    common = ["--model.init_args.model", str(model), "--data.data_dir", str(prepared)]

    base = _fit("tiny_base_prosody.yaml", *common, *QUICK)
    assert sum(_scalars(base, "train/tasks/prosody")) > 0  # the description task was trained
    base_ckpt = base.trainer.checkpoint_callback.last_model_path

    sft = _fit("tiny_sft_cot.yaml", *common, *QUICK, "--model.init_args.init_checkpoint", base_ckpt)
    sft_ckpt = sft.trainer.checkpoint_callback.last_model_path

    def quick_ptr(config):
        config["model"]["init_args"]["judge"]["model"] = str(judge)
        config["model"]["init_args"]["ptr"].update(accuracy_threshold=0.0, accuracy_window=1)

    ptr = _fit(_config(tmp_path, "tiny_ptr.yaml", quick_ptr), *common, "--model.init_args.init_checkpoint",
               sft_ckpt, "--model.init_args.max_new_tokens", "48", "--trainer.max_steps", "3", "--data.batch_size", "2")
    assert _scalars(ptr, "train/ptr/on") == [0.0, 1.0, 1.0]  # decided from the history before each batch
    assert sum(_scalars(ptr, "train/judge/answers")) == 2 * 2 * 4  # judged only once on: 2 batches x 2 x G
    ptr_ckpt = ptr.trainer.checkpoint_callback.last_model_path

    capsys.readouterr()
    def with_judge(config):
        config["trainer"]["callbacks"][0]["init_args"]["judge"]["model"] = str(judge)

    EmorlCLI(args=["test", "--config", _config(tmp_path, "tiny_explain_test.yaml", with_judge), *common,
                   "--trainer.limit_test_batches", "1", "--ckpt_path", ptr_ckpt])
    printed = capsys.readouterr().out
    table = printed[printed.index("claims/ans"):]  # the explanation table, after UA / WA / F1 ...
    table = table[:table.index("emorl test: ")]  # ... and before emorl's closing lines
    assert "ravdess" in table and table.split()[-1] == "32"  # the random judge: 32 of 32 replies unparsable
    files = list((tmp_path / "runs" / "explain_test_demo").rglob("explanations/ravdess.jsonl"))
    assert len(files) == 1, files
    records = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert records and all(r["measured"] and "claims" in r for r in records)  # held-out clips carry bins

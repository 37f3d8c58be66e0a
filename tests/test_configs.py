"""Every shipped config parses, names real classes, and opens with the command that runs it."""

import re
from pathlib import Path

import pytest
import yaml

from emorl.lightning_cli import EmorlCLI

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
CHECKPOINT_PATH = re.compile(r"runs/([\w.-]+)/version_[N0-9]/checkpoints/([\w.=-]+\.ckpt)")


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses(config):
    cli = EmorlCLI(args=["--config", str(config)], run=False, parse_only=True)
    model = cli.config["model"]
    assert model["class_path"].startswith("emorl.models.")
    assert cli.config["data"]["data_dir"]
    assert cli.config["trainer"]["logger"]["init_args"]["save_dir"] == "runs"


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_opens_with_its_command(config):
    head = config.read_text().splitlines()[:8]
    assert any(line.lstrip("# ").startswith(("emorl fit", "emorl test", "emorl demo")) for line in head)


def test_a_malformed_config_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  class_path: emorl.models.acoustic.AcousticBaseline\n  init_args:\n    hiden_dim: 3\n"
                   "data:\n  data_dir: x\n")
    with pytest.raises(SystemExit):
        EmorlCLI(args=["--config", str(bad)], run=False, parse_only=True)
    assert "hiden_dim" in capsys.readouterr().err


def _checkpoint_files_per_run() -> dict[str, set[str]]:
    """Run name -> the checkpoint file names its config's ModelCheckpoint writes under a fixed name."""
    files: dict[str, set[str]] = {}
    for config in CONFIGS:
        trainer = yaml.safe_load(config.read_text()).get("trainer") or {}
        name = trainer["logger"]["init_args"]["name"]
        for callback in trainer.get("callbacks") or []:
            if callback.get("class_path", "").endswith("ModelCheckpoint"):
                args = callback.get("init_args") or {}
                written = files.setdefault(name, set())
                if args.get("filename") and "{" not in args["filename"]:
                    written.add(args["filename"] + ".ckpt")
                if args.get("save_last"):
                    written.add("last.ckpt")
    return files


def test_every_checkpoint_path_in_configs_and_docs_is_one_a_config_writes():
    """The commands in config headers and docs can be pasted: runs/<name>/version_N/checkpoints/<file>
    names a run some config logs to and a file its checkpoint callback writes."""
    written = _checkpoint_files_per_run()
    texts = [*CONFIGS, *(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    wrong = [(str(path.relative_to(ROOT)), match.group(0)) for path in texts
             for match in CHECKPOINT_PATH.finditer(path.read_text())
             if match.group(2) not in written.get(match.group(1), set())]
    assert not wrong, wrong


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_no_shipped_config_turns_the_progress_bar_off(config):
    trainer = yaml.safe_load(config.read_text()).get("trainer") or {}
    assert trainer.get("enable_progress_bar", True) is not False

"""Every shipped config parses, names real classes, and opens with the command that runs it."""

from pathlib import Path

import pytest

from emorl.cli import EmorlCLI

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


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

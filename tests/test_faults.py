"""Interrupted runs (issue 14): a checkpoint at SIGTERM, what SIGKILL leaves, ``--ckpt_path last``."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from emorl import faults
from emorl.cli import main
from emorl.lightning_cli import EmorlCLI
from tests.corpus_factory import make_tiny_corpus

REPO = Path(__file__).resolve().parents[1]


# -- helpers -------------------------------------------------------------------------------------
def _config(tmp_path: Path, data_dir: Path, checkpoint: dict, name: str = "tiny") -> Path:
    """A tiny acoustic config that trains 'for ever' (logger save_dir ``runs``, relative to the run's cwd)."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_epochs": 100000, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
            "enable_model_summary": False, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": "runs", "name": name}},
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": checkpoint}],
        },
        "model": {"class_path": "emorl.models.acoustic.AcousticBaseline",
                  "init_args": {"hidden_dim": 16, "dropout": 0.0, "lr": 0.01}},
        "data": {"data_dir": str(data_dir), "batch_size": 4, "val_fraction": 0.25},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


#: the shipped acoustic configs' checkpointing: the best val/ua only, no last.ckpt
BEST_ONLY = {"monitor": "val/ua", "mode": "max", "filename": "best", "save_last": False}
#: the GRPO configs' checkpointing: every N steps and last.ckpt
PERIODIC = {"every_n_train_steps": 3, "save_last": True, "save_top_k": -1}


def _start(config: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "emorl", "fit", "--config", str(config)], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until ``path`` exists (training has run), failing if the run ends or the time is up."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended before {path} appeared (status {process.returncode}):\n{err[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            process.communicate()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.1)


def _finish(process: subprocess.Popen, timeout: float = 60) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the run did not stop within {timeout} s of the signal:\n{err[-3000:]}")


class _Parsed(Exception):
    """Raised by :class:`_ParseOnly` with the config LightningCLI would instantiate."""


class _ParseOnly(EmorlCLI):
    def before_instantiate_classes(self) -> None:
        raise _Parsed(self.config)


def _parsed(args: list[str]):
    with pytest.raises(_Parsed) as parsed:
        _ParseOnly(args=args)
    return parsed.value.args[0]


def _touch(path: Path, mtime: float, folder: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:  # a sharded checkpoint (FSDP / DeepSpeed): a folder named *.ckpt
        path.mkdir()
        (path / "shard_0.pt").write_bytes(b"x")
    else:  # a loadable checkpoint without hyper-parameters (LightningCLI reads them from it)
        torch.save({"state_dict": {}}, path)
    os.utime(path, (mtime, mtime))
    return path


# -- pure functions ------------------------------------------------------------------------------
def test_resume_command_keeps_overrides_and_replaces_ckpt_path():
    argv = ["fit", "--config", "my configs/a.yaml", "--trainer.max_epochs", "5", "--ckpt_path", "old.ckpt"]
    assert faults.resume_command(argv, "runs/a/version_0/checkpoints/sigterm.ckpt") == (
        "emorl fit --config 'my configs/a.yaml' --trainer.max_epochs 5 "
        "--ckpt_path runs/a/version_0/checkpoints/sigterm.ckpt")
    assert faults.resume_command(["fit", "--ckpt_path=x", "--config", "a.yaml"], "y.ckpt") == (
        "emorl fit --config a.yaml --ckpt_path y.ckpt")


def test_last_of_an_interrupted_run_is_found_past_a_later_test_run(tmp_path):
    run = tmp_path / "runs" / "tiny"
    _touch(run / "version_0" / "checkpoints" / "best.ckpt", 3000)  # newest, but not a last checkpoint
    _touch(run / "version_0" / "checkpoints" / "last.ckpt", 1000)
    sigterm = _touch(run / "version_0" / "checkpoints" / "sigterm.ckpt", 2000)
    _touch(run / "version_1" / "events.out.tfevents.1", 4000)  # a later `emorl test`: no checkpoints/
    (run / "version_2").mkdir()  # an empty version folder (a run that died at once)
    assert faults.find_last_checkpoint(tmp_path / "runs", "tiny") == sigterm

    resumed_last = _touch(run / "version_3" / "checkpoints" / "last.ckpt", 5000)  # the resumed run went on
    assert faults.find_last_checkpoint(tmp_path / "runs", "tiny") == resumed_last
    # another run name's checkpoints are not this one's
    _touch(tmp_path / "runs" / "other" / "version_0" / "checkpoints" / "last.ckpt", 9000)
    assert faults.find_last_checkpoint(tmp_path / "runs", "tiny") == resumed_last


def test_a_sharded_checkpoint_folder_and_a_versioned_last_count(tmp_path):
    run = tmp_path / "runs" / "big"
    _touch(run / "version_0" / "checkpoints" / "last.ckpt", 1000)
    versioned = _touch(run / "version_1" / "checkpoints" / "last-v1.ckpt", 2000)
    assert faults.find_last_checkpoint(tmp_path / "runs", "big") == versioned
    sharded = _touch(run / "version_2" / "checkpoints" / "last.ckpt", 3000, folder=True)
    assert faults.find_last_checkpoint(tmp_path / "runs", "big") == sharded


def test_no_training_run_means_none(tmp_path):
    assert faults.find_last_checkpoint(tmp_path / "runs", "tiny") is None
    _touch(tmp_path / "runs" / "tiny" / "version_0" / "events.out.tfevents.1", 1000)
    _touch(tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "best.ckpt", 1000)
    assert faults.find_last_checkpoint(tmp_path / "runs", "tiny") is None


def test_sigterm_message_is_one_line_naming_the_checkpoint_and_the_dropped_rollouts():
    line = faults.sigterm_message("fit", "runs/a/version_0/checkpoints/sigterm.ckpt", 12, 1, dropped=2,
                                  resume="emorl fit --config a.yaml --ckpt_path runs/a/version_0/checkpoints/sigterm.ckpt")
    assert line == ("emorl fit: stopped by SIGTERM at step 12 (epoch 1); checkpoint saved to "
                    "runs/a/version_0/checkpoints/sigterm.ckpt (2 rollout(s) waiting for the optimiser step were "
                    "dropped: the resume starts after their batches); resume with: emorl fit --config a.yaml "
                    "--ckpt_path runs/a/version_0/checkpoints/sigterm.ckpt")
    assert "\n" not in line
    assert faults.sigterm_message("test", None, 0, 0) == (
        "emorl test: stopped by SIGTERM before the end; nothing was written")


# -- --ckpt_path last through the CLI ------------------------------------------------------------
def test_ckpt_path_last_resolves_for_fit_and_test(tmp_path, monkeypatch, capsys):
    config = _config(tmp_path, tmp_path / "no-data-needed", BEST_ONLY)
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt", 1000)
    sigterm = _touch(tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "sigterm.ckpt", 2000)
    _touch(tmp_path / "runs" / "tiny" / "version_1" / "events.out.tfevents.1", 3000)
    for command, verb in (("fit", "resuming from"), ("test", "using"), ("predict", "using")):
        parsed = _parsed([command, "--config", str(config), "--ckpt_path", "last"])
        assert parsed[command]["ckpt_path"] == "runs/tiny/version_0/checkpoints/sigterm.ckpt"
        assert Path(parsed[command]["ckpt_path"]).resolve() == sigterm.resolve()
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"emorl {command}: --ckpt_path last: {verb} runs/tiny/version_0/checkpoints/sigterm.ckpt")
    # an explicit path is left alone
    parsed = _parsed(["test", "--config", str(config), "--ckpt_path", "x.ckpt"])
    assert parsed["test"]["ckpt_path"] == "x.ckpt"


def test_ckpt_path_last_without_a_training_run_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    config = _config(tmp_path, tmp_path / "no-data-needed", BEST_ONLY)
    monkeypatch.chdir(tmp_path)
    _touch(tmp_path / "runs" / "tiny" / "version_0" / "events.out.tfevents.1", 1000)  # a test run only
    for command in ("fit", "validate"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--config", str(config), "--ckpt_path", "last"])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == (
            f"emorl {command}: error: --ckpt_path last: no checkpoint of a training run under runs/tiny/, "
            "run emorl fit without --ckpt_path first")


# -- the signals, on a real run ------------------------------------------------------------------
def test_sigterm_saves_a_checkpoint_exits_non_zero_and_the_run_resumes_from_it(tmp_path, monkeypatch):
    corpus = make_tiny_corpus(tmp_path / "c")
    config = _config(tmp_path, corpus.root, BEST_ONLY)
    checkpoints = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints"
    process = _start(config, tmp_path)
    _wait_for(checkpoints / "best.ckpt", process)  # an epoch has trained and validated
    process.send_signal(signal.SIGTERM)
    _, err = _finish(process)
    assert process.returncode == faults.SIGTERM_EXIT_STATUS, err[-3000:]

    lines = [line for line in err.splitlines() if line.startswith("emorl fit: stopped by SIGTERM")]
    assert len(lines) == 1, err[-3000:]
    match = re.fullmatch(r"emorl fit: stopped by SIGTERM at step (\d+) \(epoch (\d+)\); checkpoint saved to (\S+); "
                         r"resume with: (.+)", lines[0])
    assert match, lines[0]
    step, ckpt, resume = int(match[1]), match[3], shlex.split(match[4])
    assert ckpt == "runs/tiny/version_0/checkpoints/sigterm.ckpt"
    assert (tmp_path / ckpt).is_file()
    saved = torch.load(tmp_path / ckpt, map_location="cpu", weights_only=False)
    assert saved["global_step"] == step > 0
    assert resume == ["emorl", "fit", "--config", str(config), "--ckpt_path", ckpt]

    # the printed command resumes at the checkpoint's step: one more step ends at step + 1
    monkeypatch.chdir(tmp_path)
    cli = EmorlCLI(args=[*resume[1:], "--trainer.max_steps", str(step + 1)])
    assert cli.trainer.global_step == step + 1
    assert cli.trainer.log_dir == str(Path("runs/tiny/version_1"))


def test_sigkill_leaves_the_last_periodic_checkpoint_and_ckpt_path_last_finds_it(tmp_path, monkeypatch, capsys):
    corpus = make_tiny_corpus(tmp_path / "c")
    config = _config(tmp_path, corpus.root, PERIODIC)
    checkpoints = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints"
    process = _start(config, tmp_path)
    _wait_for(checkpoints / "last.ckpt", process)
    time.sleep(1.0)  # let it train on past the first periodic checkpoint
    process.send_signal(signal.SIGKILL)
    _finish(process)
    assert process.returncode == -signal.SIGKILL
    assert not (checkpoints / faults.SIGTERM_CHECKPOINT).exists()  # no handler runs at SIGKILL
    last = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=False)  # complete (atomic save)
    assert last["global_step"] > 0 and last["global_step"] % PERIODIC["every_n_train_steps"] == 0

    monkeypatch.chdir(tmp_path)
    parsed = _parsed(["fit", "--config", str(config), "--ckpt_path", "last"])
    assert Path(parsed["fit"]["ckpt_path"]).resolve() == (checkpoints / "last.ckpt").resolve()
    assert "resuming from runs/tiny/version_0/checkpoints/last.ckpt" in capsys.readouterr().err


class _Accumulating:
    """A manual-optimisation module that steps every 2 batches (GRPO's ``buffer``), and SIGTERMs itself."""

    @staticmethod
    def build(signal_at_batch: int):
        import lightning as L

        class Module(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.automatic_optimization = False
                self.layer = torch.nn.Linear(2, 1)
                self.buffer = []

            def training_step(self, batch, batch_idx):
                self.buffer.append(batch)
                if len(self.buffer) >= 2:
                    optimizer = self.optimizers()
                    self.manual_backward(sum(self.layer(b).sum() for b in self.buffer))
                    optimizer.step()
                    optimizer.zero_grad()
                    self.buffer = []
                if batch_idx == signal_at_batch:
                    os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler sets trainer.received_sigterm

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

            def train_dataloader(self):
                return torch.utils.data.DataLoader(torch.randn(40, 2), batch_size=2)

        return Module()


@pytest.mark.parametrize("signal_at_batch, dropped", [(2, 1), (3, 0)])
def test_sigterm_in_process_names_dropped_rollouts_and_exits_143(tmp_path, capsys, signal_at_batch, dropped):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    module = _Accumulating.build(signal_at_batch)
    trainer = L.Trainer(max_epochs=5, accelerator="cpu", devices=1, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False,
                        logger=CSVLogger(tmp_path / "runs", name="acc"),
                        callbacks=[faults.SigtermCheckpoint(["fit", "--config", "a.yaml"])])
    with pytest.raises(SystemExit) as exit_info:
        trainer.fit(module)
    assert exit_info.value.code == faults.SIGTERM_EXIT_STATUS
    ckpt = tmp_path / "runs" / "acc" / "version_0" / "checkpoints" / "sigterm.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    steps = (signal_at_batch + 1) // 2  # the optimiser steps taken up to the signalled batch
    assert saved["global_step"] == steps
    line = capsys.readouterr().err.strip().splitlines()[-1]
    shown = faults.display_path(ckpt)
    expected = faults.sigterm_message("fit", shown, steps, 0, dropped,
                                      faults.resume_command(["fit", "--config", "a.yaml"], shown))
    assert line == expected
    assert ("rollout(s) waiting for the optimiser step were dropped" in line) == bool(dropped)


@pytest.mark.slow
def test_sigterm_under_ddp_every_rank_stops_after_the_same_batch_and_saves_once(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c")
    config = _config(tmp_path, corpus.root, PERIODIC)
    data = yaml.safe_load(config.read_text())
    data["trainer"].update({"devices": 2, "strategy": "ddp", "limit_val_batches": 0})
    config.write_text(yaml.safe_dump(data))
    checkpoints = tmp_path / "runs" / "tiny" / "version_0" / "checkpoints"
    process = _start(config, tmp_path)  # rank 0; Lightning starts rank 1 and forwards the signal to it
    _wait_for(checkpoints / "last.ckpt", process, timeout=180)
    process.send_signal(signal.SIGTERM)
    _, err = _finish(process, timeout=90)
    assert process.returncode == faults.SIGTERM_EXIT_STATUS, err[-3000:]
    lines = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert len(lines) == 1, err[-3000:]  # rank zero says it once
    step = int(re.search(r"at step (\d+) ", lines[0])[1])
    saved = torch.load(checkpoints / faults.SIGTERM_CHECKPOINT, map_location="cpu", weights_only=False)
    assert saved["global_step"] == step > 0


def test_sigterm_during_test_is_said_and_exits_143(tmp_path, capsys):
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def test_step(self, batch, batch_idx):
            if batch_idx == 1:
                os.kill(os.getpid(), signal.SIGTERM)

        def test_dataloader(self):
            return torch.utils.data.DataLoader(torch.randn(10, 2), batch_size=2)

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path,
                        callbacks=[faults.SigtermCheckpoint(["test", "--config", "a.yaml"])])
    with pytest.raises(SystemExit) as exit_info:
        trainer.test(Module())
    assert exit_info.value.code == faults.SIGTERM_EXIT_STATUS
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "emorl test: stopped by SIGTERM before the end; nothing was written")
    assert not list(tmp_path.rglob("*.ckpt"))

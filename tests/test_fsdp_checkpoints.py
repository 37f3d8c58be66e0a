"""Sharded checkpoints under :class:`emorl.strategy.FSDP2Strategy` (2 CPU processes, gloo), through ``emorl fit``.

- exact resume: 4 optimiser steps == 2 + resume from the sharded step-2 checkpoint + 2 (same
  batches, losses, learning rates and weights, bit for bit);
- the folder holds the trainable weights only (the frozen layer is not in it) and their AdamW states;
- ``--ckpt_path last`` finds a sharded ``last.ckpt`` folder;
- ``emorl checkpoint consolidate`` -> one file that ``emorl test --ckpt_path`` (one device) and
  ``init_checkpoint`` read: the weights they load are the trained ones;
- SIGTERM under the strategy: every rank saves its shards into ``sigterm.ckpt/``, exit 143, and
  ``--ckpt_path last`` picks that folder (loading a sharded folder is the exact-resume test's).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from emorl import faults
from emorl.errors import EmorlError
from emorl.strategy import FSDP2Strategy, resolve_mesh_sizes
from tests.corpus_factory import make_tiny_corpus

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _config(data_dir: Path, record: Path, name: str = "tiny", **trainer) -> dict:
    """Two CPU processes under FSDP2Strategy, a checkpoint every 2 steps and last.ckpt, a recorder."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 4, "accelerator": "cpu", "devices": 2,
            "strategy": {"class_path": "emorl.strategy.FSDP2Strategy"},
            "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1,
            "limit_val_batches": 0, "num_sanity_val_steps": 0,
            "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                       "init_args": {"save_dir": "runs", "name": name}},
            "callbacks": [
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"every_n_train_steps": 2, "save_top_k": -1, "save_last": True, "filename": "{step}"}},
                {"class_path": "tests.fsdp_probe.RecordSteps", "init_args": {"out_dir": str(record)}},
            ],
        },
        "model": {"class_path": "tests.fsdp_probe.ShardedAcoustic",
                  "init_args": {"hidden_dim": 16, "dropout": 0.0, "lr": 0.02, "warmup_steps": 5}},
        "data": {"data_dir": str(data_dir), "batch_size": 3, "val_fraction": 0.25, "num_workers": 0},
    }
    config["trainer"].update(trainer)
    return config


def _emorl(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emorl", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _fit(config: dict, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    path = cwd / f"fit-{config['trainer']['logger']['init_args']['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    done = _emorl(["fit", "--config", str(path), *extra], cwd)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _steps(record: Path) -> dict[int, dict]:
    """``{global_step: {"keys": [rank 0's, rank 1's], "loss": [...], "lr": ...}}`` of a recorded run."""
    ranks = [json.loads((record / f"steps.rank{r}.json").read_text()) for r in (0, 1)]
    return {s0["step"]: {"keys": [s0["keys"], s1["keys"]], "loss": [s0["loss"], s1["loss"]], "lr": s0["lr"]}
            for s0, s1 in zip(ranks[0]["steps"], ranks[1]["steps"])}


def _weights(record: Path, stage: str = "fit", rank: int = 0) -> dict:
    return torch.load(record / f"weights.{stage}.rank{rank}.pt", weights_only=True)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


# -- the strategy's sizes (no process) ------------------------------------------------------------
def test_sizes_default_to_data_parallel_over_the_world():
    assert resolve_mesh_sizes("auto", 1, 8) == (8, 1)
    assert resolve_mesh_sizes("auto", "auto", 16) == (16, 1)  # not Lightning's (num_nodes, devices)
    assert resolve_mesh_sizes(4, 2, 8) == (4, 2)  # explicit sizes still accepted
    with pytest.raises(EmorlError, match=r"data_parallel_size 3 x tensor_parallel_size 1 = 3, not the world size 4"):
        resolve_mesh_sizes(3, 1, 4)
    with pytest.raises(EmorlError, match="tensor_parallel_size 0"):
        FSDP2Strategy(tensor_parallel_size=0)


def test_sizes_that_do_not_make_the_world_are_a_one_line_error_of_emorl_fit(tmp_path, monkeypatch, capsys):
    from emorl.cli import main

    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(_config(corpus.root, tmp_path / "record", devices=1)))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        main(["fit", "--config", str(path), "--trainer.strategy.data_parallel_size", "2"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "emorl fit: error: FSDP2Strategy: data_parallel_size 2 x tensor_parallel_size 1 = 2, not the world size 1 "
        "(trainer.num_nodes x trainer.devices); leave them out (data-parallel = the world size) or make their "
        "product the world size")


# -- 2 processes -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """4 steps under FSDP2Strategy on 2 processes, sharded checkpoints at steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("fsdp")
    corpus = make_tiny_corpus(tmp / "c", per_speaker_label=1)
    _fit(_config(corpus.root, tmp / "whole"), tmp)
    return tmp, corpus


@pytest.mark.slow
def test_four_steps_equal_two_then_resume_then_two(whole_run):
    tmp, corpus = whole_run
    checkpoints = tmp / "runs/tiny/version_0/checkpoints"
    step2 = checkpoints / "step=2.ckpt"
    assert (step2 / "meta.pt").is_file() and len(list(step2.glob("*.distcp"))) == 2  # one file per rank
    meta = torch.load(step2 / "meta.pt", weights_only=True)
    assert meta["global_step"] == 2 and "optimizer_states" not in meta and meta["lr_schedulers"]
    saved = _saved_keys(step2)
    weights = {k.removeprefix("state_dict.") for k in saved if k.startswith("state_dict.")}
    assert weights == set(meta["emorl_trainable_keys"])  # trainable weights only, no buffers
    assert not any("frozen" in k for k in saved)  # the frozen layer is never saved
    assert {k for k in saved if k.startswith("optimizer_0.state.")} >= {f"optimizer_0.state.{w}.exp_avg" for w in weights}

    _fit(_config(corpus.root, tmp / "resumed", name="resumed"), tmp, "--ckpt_path", str(step2))
    whole, resumed = _steps(tmp / "whole"), _steps(tmp / "resumed")
    assert sorted(whole) == [1, 2, 3, 4] and sorted(resumed) == [3, 4]
    assert whole[1]["keys"][0] != whole[1]["keys"][1]  # each rank its own batches
    for step in (3, 4):
        assert resumed[step] == whole[step], step  # same batches, losses (exactly), learning rate
    whole_weights, resumed_weights = _weights(tmp / "whole"), _weights(tmp / "resumed")
    for step in (3, 4):
        _assert_same_weights(resumed_weights["per_step"][step], whole_weights["per_step"][step])
    _assert_same_weights(resumed_weights["final"], whole_weights["final"])
    assert not torch.equal(whole_weights["per_step"][2]["mlp.0.weight"], whole_weights["final"]["mlp.0.weight"])
    assert whole[3]["lr"] != whole[4]["lr"]  # the warm-up schedule was restored, not restarted


@pytest.mark.slow
def test_ckpt_path_last_finds_the_sharded_last_folder(whole_run):
    tmp, _ = whole_run
    found = faults.find_last_checkpoint(tmp / "runs", "tiny")
    assert found == tmp / "runs/tiny/version_0/checkpoints/last.ckpt" and found.is_dir()
    assert torch.load(found / "meta.pt", weights_only=True)["global_step"] == 4


@pytest.mark.slow
def test_consolidated_checkpoint_is_read_by_emorl_test_and_init_checkpoint(whole_run, monkeypatch, capsys):
    from emorl.cli import main
    from emorl.commands import run_command

    tmp, corpus = whole_run
    monkeypatch.chdir(tmp)
    folder, out = tmp / "runs/tiny/version_0/checkpoints/last.ckpt", tmp / "last-full.ckpt"
    assert run_command(["checkpoint", "consolidate", str(folder), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    trained = _weights(tmp / "whole")["final"]
    full = torch.load(out, weights_only=True)
    _assert_same_weights(full["state_dict"], trained)  # the all-gathered weights of the run, exactly
    assert "optimizer_states" not in full and full["global_step"] == 4
    assert full["hyper_parameters"]["_class_path"] == "tests.fsdp_probe.ShardedAcoustic"
    assert run_command(["checkpoint", "consolidate", str(folder), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err.splitlines()[-1]

    # emorl test --ckpt_path on one device: the module it tests holds the trained weights
    config = _config(corpus.root, tmp / "test", name="test", devices=1, strategy="auto")
    config["trainer"]["callbacks"] = config["trainer"]["callbacks"][1:]
    path = tmp / "test.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["test", "--config", str(path), "--ckpt_path", str(out)])
    _assert_same_weights(_weights(tmp / "test", "test")["final"], trained)

    # init_checkpoint reads the same file (emorl.models.checkpoints.load_trained_weights)
    from emorl.models.checkpoints import load_trained_weights
    from tests.fsdp_probe import ShardedAcoustic, full_trainable_weights

    module = ShardedAcoustic(["neutral", "happy", "sad", "angry"], hidden_dim=16, dropout=0.0)
    assert not torch.equal(module.mlp[0].weight, trained["mlp.0.weight"])
    load_trained_weights(module, out)
    _assert_same_weights(full_trainable_weights(module), trained)


def test_consolidate_refuses_what_is_not_a_sharded_checkpoint(tmp_path):
    from emorl.models.sharded_checkpoints import consolidate

    (tmp_path / "half.ckpt").mkdir()  # an interrupted save: no meta.pt
    with pytest.raises(EmorlError, match="not a sharded checkpoint"):
        consolidate(tmp_path / "half.ckpt", tmp_path / "out.ckpt")
    with pytest.raises(EmorlError, match="no such checkpoint folder"):
        consolidate(tmp_path / "none.ckpt", tmp_path / "out.ckpt")


@pytest.mark.slow
def test_sigterm_saves_a_sharded_checkpoint_on_every_rank_and_last_finds_it(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = _config(corpus.root, tmp_path / "record", name="term", max_steps=10_000)
    path = tmp_path / "fit-term.yaml"
    path.write_text(yaml.safe_dump(config))
    checkpoints = tmp_path / "runs/term/version_0/checkpoints"
    process = subprocess.Popen([sys.executable, "-m", "emorl", "fit", "--config", str(path)], cwd=tmp_path, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not (checkpoints / "last.ckpt" / "meta.pt").is_file():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 180 s"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)  # rank 0; Lightning's launcher forwards it to rank 1
    try:
        _, err = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the run did not stop within 120 s of SIGTERM")
    assert process.returncode == faults.SIGTERM_EXIT_STATUS, err[-3000:]
    sigterm = checkpoints / faults.SIGTERM_CHECKPOINT
    step = torch.load(sigterm / "meta.pt", weights_only=True)["global_step"]
    assert step >= 2 and len(list(sigterm.glob("*.distcp"))) == 2
    assert sum("stopped by SIGTERM" in line for line in err.splitlines()) == 1

    assert faults.find_last_checkpoint(tmp_path / "runs", "term") == sigterm  # what --ckpt_path last resumes


def _saved_keys(folder: Path) -> set[str]:
    from emorl.models.sharded_checkpoints import saved_tensor_keys

    return saved_tensor_keys(folder)

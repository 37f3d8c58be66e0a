"""Sharded checkpoints under :class:`emorl.strategy.FSDP2Strategy` (2 CPU processes, gloo), through
``emorl fit`` of the real GRPOLALM (tiny Qwen2-Audio, all weights trained, a sharded KL reference).

- exact resume: 4 optimiser steps == 2 + resume from the sharded step-2 checkpoint + 2 (same
  prompts, sampled answers, losses, learning rates and weights, bit for bit);
- the folder holds the trainable weights only (not the frozen audio tower) and their AdamW states;
- ``--ckpt_path last`` finds a sharded ``last.ckpt`` folder;
- ``emorl checkpoint consolidate`` -> one file that ``emorl test --ckpt_path`` (one device) and
  ``init_checkpoint`` read: the weights they load are the trained ones;
- the strategy's default and refused mesh sizes.

SIGTERM under the strategy is tested on the 2-node launch (``tests/test_multinode.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def test_a_finished_run_destroys_its_process_group(tmp_path, monkeypatch):
    """A gloo group left to the interpreter's shutdown can abort a run that has finished (exit status
    -6, "terminate called without an active exception"): `emorl fit` destroys it when the run ends."""
    import torch.distributed as dist

    from emorl.cli import main

    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(_config(corpus.root, tmp_path / "record", devices=1, max_steps=1)))
    monkeypatch.chdir(tmp_path)
    from emorl.lightning_cli import EmorlCLI

    seen, after_fit = {}, EmorlCLI.after_fit

    def spy(cli):
        seen["initialized"] = dist.is_initialized()
        after_fit(cli)

    monkeypatch.setattr(EmorlCLI, "after_fit", spy)
    main(["fit", "--config", str(path)])
    assert seen == {"initialized": True}  # the run had a process group
    assert not dist.is_initialized()


# -- 2 processes: the real GRPOLALM, all weights trained ------------------------------------------
def _grpo_config(data_dir: Path, record: Path, name: str) -> dict:
    """configs/emorl_esr.yaml on the tiny Qwen2-Audio, full fine-tuning (a sharded KL reference), float32,
    under FSDP2Strategy on 2 CPU processes, a sharded checkpoint every 2 steps and last.ckpt."""
    from tests.lalm_fixtures import tiny_model_dir

    config = yaml.safe_load((REPO / "configs/emorl_esr.yaml").read_text())
    config["trainer"].update(_config(data_dir, record, name=name)["trainer"])
    config["trainer"]["callbacks"][1]["class_path"] = "tests.fsdp_probe.RecordGRPOSteps"
    config["model"]["init_args"].update({
        "model": str(tiny_model_dir("qwen2-audio")), "dtype": "float32", "gradient_checkpointing": False,
        "full_finetune": True, "lora": None, "lr": 1e-3, "warmup_steps": 5, "beta": 0.04,
        "max_new_tokens": 5, "eval_max_new_tokens": 3, "num_generations": 3, "accumulate_grad_batches": 1,
        "prompt_format": "ir", "loss_type": "dapo",
        "rewards": [{"name": "format_ir", "weight": 1.0}, {"name": "answer_length", "weight": 1.0}]})
    config["data"].update({"data_dir": str(data_dir), "num_workers": 0, "batch_size": 2, "eval_batch_size": 4})
    return config


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    """4 GRPO steps under FSDP2Strategy on 2 processes, sharded checkpoints at steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("fsdp")
    corpus = make_tiny_corpus(tmp / "c", per_speaker_label=1)
    _fit(_grpo_config(corpus.root, tmp / "whole", "whole"), tmp)
    return tmp, corpus


@pytest.mark.slow
def test_four_grpo_steps_equal_two_then_resume_then_two(grpo_run):
    tmp, corpus = grpo_run
    step2 = tmp / "runs/whole/version_0/checkpoints/step=2.ckpt"
    assert (step2 / "meta.pt").is_file() and len(list(step2.glob("*.distcp"))) == 2  # one file per rank
    meta = torch.load(step2 / "meta.pt", weights_only=True)
    assert meta["global_step"] == 2 and "optimizer_states" not in meta and meta["lr_schedulers"]
    assert len(meta["emorl_grpo"]["rng"]) == 2  # both ranks' RNG states (the sampled answers resume)
    saved = _saved_keys(step2)
    weights = {k.removeprefix("state_dict.") for k in saved if k.startswith("state_dict.")}
    assert weights == set(meta["emorl_trainable_keys"])  # the trainable weights only
    assert weights and not any("audio_tower" in k for k in saved)  # the frozen audio tower is never saved
    assert any(k.startswith("optimizer_0.state.") and k.endswith(".exp_avg_sq") for k in saved)

    _fit(_grpo_config(corpus.root, tmp / "resumed", "resumed"), tmp, "--ckpt_path", str(step2))
    whole, resumed = _steps(tmp / "whole"), _steps(tmp / "resumed")
    assert sorted(whole) == [1, 2, 3, 4] and sorted(resumed) == [3, 4]
    assert whole[1]["keys"][0] != whole[1]["keys"][1]  # each rank its own prompts (and answers)
    for step in (3, 4):  # the same prompts, sampled answers, loss (exactly) and learning rate
        assert resumed[step] == whole[step], step
    whole_weights, resumed_weights = _weights(tmp / "whole"), _weights(tmp / "resumed")
    for step in (3, 4):
        _assert_same_weights(resumed_weights["per_step"][step], whole_weights["per_step"][step])
    _assert_same_weights(resumed_weights["final"], whole_weights["final"])
    assert any(not torch.equal(whole_weights["per_step"][2][n], t) for n, t in whole_weights["final"].items())
    assert whole[3]["lr"] != whole[4]["lr"]  # the warm-up schedule was restored, not restarted


@pytest.mark.slow
def test_ckpt_path_last_finds_the_sharded_last_folder(grpo_run):
    tmp, _ = grpo_run
    found = faults.find_last_checkpoint(tmp / "runs", "whole")
    assert found == tmp / "runs/whole/version_0/checkpoints/last.ckpt" and found.is_dir()
    assert torch.load(found / "meta.pt", weights_only=True)["global_step"] == 4


@pytest.mark.slow
def test_consolidated_checkpoint_is_read_by_emorl_test_and_init_checkpoint(grpo_run, monkeypatch, capsys):
    from emorl.cli import main
    from emorl.commands import run_command

    tmp, corpus = grpo_run
    monkeypatch.chdir(tmp)
    folder, out = tmp / "runs/whole/version_0/checkpoints/last.ckpt", tmp / "last-full.ckpt"
    assert run_command(["checkpoint", "consolidate", str(folder), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    trained = _weights(tmp / "whole")["final"]
    full = torch.load(out, weights_only=True)
    _assert_same_weights(full["state_dict"], trained)  # the all-gathered weights of the run, exactly
    assert all(t.dtype == torch.float32 for t in full["state_dict"].values())
    assert "optimizer_states" not in full and full["global_step"] == 4
    assert full["hyper_parameters"]["_class_path"] == "emorl.models.grpo.GRPOLALM"
    assert run_command(["checkpoint", "consolidate", str(folder), "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err.splitlines()[-1]

    # emorl test --ckpt_path on one device: the module it tests holds the trained weights
    config = _grpo_config(corpus.root, tmp / "test", "test")
    config["trainer"].update({"devices": 1, "strategy": "auto"})
    config["trainer"]["callbacks"] = config["trainer"]["callbacks"][1:]
    path = tmp / "test.yaml"
    path.write_text(yaml.safe_dump(config))
    main(["test", "--config", str(path), "--ckpt_path", str(out)])
    _assert_same_weights(_weights(tmp / "test", "test")["final"], trained)
    # the folder itself on one device: one line naming the command that consolidates it
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["test", "--config", str(path), "--ckpt_path", str(folder)])
    assert stop.value.code == 2
    line, = capsys.readouterr().err.strip().splitlines()[-1:]
    assert f"emorl checkpoint consolidate {folder}" in line and "sharded checkpoint folder" in line

    # init_checkpoint reads the same file (a GRPO stage starting from another's weights)
    from emorl.models.grpo import GRPOLALM
    from tests.fsdp_probe import full_trainable_weights

    init_args = config["model"]["init_args"]
    module = GRPOLALM(["neutral", "happy", "sad", "angry"], model=init_args["model"], dtype="float32",
                      full_finetune=True, lora=None, beta=0.0, init_checkpoint=str(out))
    _assert_same_weights(full_trainable_weights(module), trained)


def test_consolidate_refuses_what_is_not_a_sharded_checkpoint(tmp_path):
    from emorl.models.sharded_checkpoints import consolidate

    (tmp_path / "half.ckpt").mkdir()  # an interrupted save: no meta.pt
    with pytest.raises(EmorlError, match="not a sharded checkpoint"):
        consolidate(tmp_path / "half.ckpt", tmp_path / "out.ckpt")
    with pytest.raises(EmorlError, match="no such checkpoint folder"):
        consolidate(tmp_path / "none.ckpt", tmp_path / "out.ckpt")




def test_a_sharded_folder_is_dated_by_its_meta_pt(tmp_path):
    """A save into an existing ``last.ckpt/`` rewrites its files without always touching the folder:
    ``--ckpt_path last`` dates it by ``meta.pt`` (written last), not by the folder."""
    checkpoints = tmp_path / "runs/tiny/version_0/checkpoints"
    last, sigterm = checkpoints / "last.ckpt", checkpoints / faults.SIGTERM_CHECKPOINT
    for folder in (last, sigterm):
        folder.mkdir(parents=True)
        (folder / "meta.pt").write_bytes(b"x")
    os.utime(last / "meta.pt", (3000, 3000))  # rewritten after the SIGTERM save
    os.utime(last, (1000, 1000))
    os.utime(sigterm / "meta.pt", (2000, 2000))
    os.utime(sigterm, (2000, 2000))
    assert faults.find_last_checkpoint(tmp_path / "runs", "tiny") == last
    os.utime(last / "meta.pt", (1000, 1000))
    assert faults.find_last_checkpoint(tmp_path / "runs", "tiny") == sigterm


def _saved_keys(folder: Path) -> set[str]:
    from emorl.models.sharded_checkpoints import saved_tensor_keys

    return saved_tensor_keys(folder)

"""Multi-node: 2 "nodes" of 1 process each on this machine, launched as a cluster launches them.

Each node runs ``emorl fit ... --trainer.num_nodes 2 --trainer.devices 1`` with ``NODE_RANK`` 0 / 1,
``MASTER_ADDR`` / ``MASTER_PORT`` of node 0 and ``WORLD_SIZE`` 2 in its environment (what a cluster's
job spec exports; docs/scale.md, "Launching"), under :class:`emorl.strategy.FSDP2Strategy`. The two
form one world: each trains on its own batches and holds half of the trainable weights, both write
their shards of the checkpoint folders. Then, as SLURM does at a time limit, both nodes get SIGTERM:
both stop after the same batch, save their shards of ``sigterm.ckpt/`` and exit 143, and
``--ckpt_path last`` picks that folder.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from emorl import faults
from tests.corpus_factory import make_tiny_corpus
from tests.test_fsdp_checkpoints import REPO, _config

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_nodes(config: Path, cwd: Path) -> list[subprocess.Popen]:
    port = _free_port()
    nodes = []
    for node_rank in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node_rank), "WORLD_SIZE": "2"}
        nodes.append(subprocess.Popen(
            [sys.executable, "-m", "emorl", "fit", "--config", str(config), "--trainer.num_nodes", "2",
             "--trainer.devices", "1", "--trainer.accelerator", "cpu"],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return nodes


def _stop_all(nodes: list[subprocess.Popen]) -> None:
    for node in nodes:
        if node.poll() is None:
            node.kill()
        node.communicate()


def test_two_nodes_of_one_process_train_together_and_stop_together_at_sigterm(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(_config(corpus.root, tmp_path / "record", name="nodes", max_steps=10_000)))
    checkpoints = tmp_path / "runs/nodes/version_0/checkpoints"
    nodes = _start_nodes(path, tmp_path)
    try:
        deadline = time.monotonic() + 180
        while not (checkpoints / "last.ckpt" / "meta.pt").is_file():  # step 2's checkpoint, both nodes' shards
            if any(node.poll() is not None for node in nodes) or time.monotonic() > deadline:
                _stop_all(nodes)
                pytest.fail("a node ended, or no checkpoint within 180 s:\n"
                            + "\n".join(node.stderr.read()[-2000:] if node.stderr else "" for node in nodes))
            time.sleep(0.1)
        for node in nodes:  # as SLURM signals every task of the job
            node.send_signal(signal.SIGTERM)
        errors = [node.communicate(timeout=120)[1] for node in nodes]
    except subprocess.TimeoutExpired:
        _stop_all(nodes)
        pytest.fail("the nodes did not stop within 120 s of SIGTERM")
    assert [n.returncode for n in nodes] == [faults.SIGTERM_EXIT_STATUS] * 2, errors[0][-3000:] + errors[1][-3000:]
    assert sum("stopped by SIGTERM" in line for line in errors[0].splitlines()) == 1  # rank 0 says it
    assert "stopped by SIGTERM" not in errors[1]

    ranks = [json.loads((tmp_path / "record" / f"steps.rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["node_rank"], r["world_size"]) for r in ranks] == [(0, 0, 2), (1, 1, 2)]
    step = ranks[0]["global_step"]
    assert step == ranks[1]["global_step"] >= 2  # both stopped after the same step
    assert len(ranks[0]["steps"]) == len(ranks[1]["steps"]) == step
    for step0, step1 in zip(ranks[0]["steps"], ranks[1]["steps"]):
        assert not set(step0["keys"]) & set(step1["keys"])  # each node its own batches
        assert step0["loss"] != step1["loss"]
    weights = [torch.load(tmp_path / "record" / f"weights.fit.rank{r}.pt", weights_only=True) for r in (0, 1)]
    full = sum(t.numel() for t in weights[0]["final"].values())
    assert ranks[0]["local_numel"] + ranks[1]["local_numel"] == full  # each node holds its shards
    assert max(r["local_numel"] for r in ranks) <= full // 2 + 64
    for name, tensor in weights[0]["final"].items():  # one model: the same weights on both nodes
        torch.testing.assert_close(weights[1]["final"][name], tensor, rtol=0, atol=0)
    assert any(not torch.equal(weights[0]["initial"][n], t) for n, t in weights[0]["final"].items())  # it trained

    sigterm = checkpoints / faults.SIGTERM_CHECKPOINT
    assert len(list(sigterm.glob("*.distcp"))) == 2  # both nodes wrote their shards
    assert torch.load(sigterm / "meta.pt", weights_only=True)["global_step"] == step
    assert faults.find_last_checkpoint(tmp_path / "runs", "nodes") == sigterm  # what --ckpt_path last resumes

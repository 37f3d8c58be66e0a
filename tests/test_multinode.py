"""Multi-node: 2 "nodes" of 1 process each on this machine, launched as a cluster launches them.

Each node runs ``emorl fit ... --trainer.num_nodes 2 --trainer.devices 1`` with ``NODE_RANK`` 0 / 1,
``MASTER_ADDR`` / ``MASTER_PORT`` of node 0 and ``WORLD_SIZE`` 2 in its environment (what a SLURM
script or a cluster's job spec exports; docs/scale.md, "Launching"). Under
:class:`emorl.strategy.FSDP2Strategy` the two processes form one world: each trains on its own batches,
holds half of the trainable weights, and both end with the same (all-gathered) weights, which moved.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.corpus_factory import make_tiny_corpus
from tests.test_fsdp_checkpoints import REPO, _config

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nodes_of_one_process_train_together(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = _config(corpus.root, tmp_path / "record", name="nodes", max_steps=2)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    port = _free_port()
    nodes = []
    for node_rank in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "NODE_RANK": str(node_rank), "WORLD_SIZE": "2"}
        nodes.append(subprocess.Popen(
            [sys.executable, "-m", "emorl", "fit", "--config", str(path), "--trainer.num_nodes", "2",
             "--trainer.devices", "1", "--trainer.accelerator", "cpu"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    errors = []
    for node in nodes:
        try:
            errors.append(node.communicate(timeout=240)[1])
        except subprocess.TimeoutExpired:
            for other in nodes:
                other.kill()
            pytest.fail("the two nodes did not finish within 240 s")
    assert [n.returncode for n in nodes] == [0, 0], errors[0][-3000:] + errors[1][-3000:]

    ranks = [json.loads((tmp_path / "record" / f"steps.rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["node_rank"], r["world_size"], r["global_step"]) for r in ranks] == [(0, 0, 2, 2), (1, 1, 2, 2)]
    for step0, step1 in zip(ranks[0]["steps"], ranks[1]["steps"]):
        assert not set(step0["keys"]) & set(step1["keys"])  # each node its own batches
        assert step0["loss"] != step1["loss"]
    weights = [torch.load(tmp_path / "record" / f"weights.fit.rank{r}.pt", weights_only=True) for r in (0, 1)]
    full = sum(t.numel() for t in weights[0]["final"].values())
    assert ranks[0]["local_numel"] + ranks[1]["local_numel"] == full  # each node holds its shards
    assert max(r["local_numel"] for r in ranks) <= full // 2 + 64
    for name, tensor in weights[0]["final"].items():
        torch.testing.assert_close(weights[1]["final"][name], tensor, rtol=0, atol=0)
    assert any(not torch.equal(weights[0]["initial"][n], t) for n, t in weights[0]["final"].items())  # it trained
    last = tmp_path / "runs/nodes/version_0/checkpoints/last.ckpt"
    assert len(list(last.glob("*.distcp"))) == 2  # both nodes wrote their shards of the checkpoint

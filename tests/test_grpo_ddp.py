"""GRPO under DDP: two CPU processes (gloo) run real GRPO steps through `emorl fit`.

Every rank generates for its own prompts (disjoint batches), the logged rewards are the mean over
both ranks, and the gradients are averaged (both ranks end with the same LoRA weights).
"""

import json
from pathlib import Path

import pytest
import yaml

from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import run_emorl, tiny_model_dir, two_process_steps

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_two_process_ddp_grpo_steps(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = yaml.safe_load((REPO / "configs/emorl/lora/emorl_esr.yaml").read_text())
    config["trainer"].update(two_process_steps("tests.ddp_probe.RecordRank", tmp_path / "ranks"))
    config["model"]["init_args"].update({
        "model": str(tiny_model_dir("qwen2-audio")), "dtype": "float32", "gradient_checkpointing": False,
        "max_new_tokens": 6, "eval_max_new_tokens": 4, "num_generations": 3, "accumulate_grad_batches": 1,
        "lr": 1e-2, "lora": {"r": 2, "alpha": 4, "dropout": 0.0}, "prompt_format": "ir",
        "rewards": [{"name": "format_ir", "weight": 1.0}, {"name": "eswr", "weight": 1.0},
                    {"name": "answer_length", "weight": 1.0}],  # registered by tests.ddp_probe
        "loss_type": "dapo",
    })
    config["data"].update({"data_dir": str(corpus.root), "num_workers": 0, "batch_size": 2})
    run_emorl("fit", config, tmp_path)
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
    assert [r["global_step"] for r in ranks] == [3, 3]
    for step0, step1 in zip(ranks[0]["steps"], ranks[1]["steps"]):
        assert not set(step0["keys"]) & set(step1["keys"])  # each rank its own prompts
        assert step0["local_answers"] == step1["local_answers"] == 2 * 3  # G answers per own prompt
        mean = (step0["local_reward"] + step1["local_reward"]) / 2
        assert step0["logged_reward"] == pytest.approx(mean) == step1["logged_reward"]  # global metrics
    assert ranks[0]["weights_sum"] == pytest.approx(ranks[1]["weights_sum"], rel=1e-6, abs=1e-9)
    assert ranks[0]["weights_abs"] == pytest.approx(ranks[1]["weights_abs"], rel=1e-6)
    assert ranks[0]["weights_abs"] != pytest.approx(ranks[0]["start_abs"], rel=1e-6)  # it did train

"""SFT and GRPO under FSDP2 (Lightning's ModelParallelStrategy, 2 CPU processes over gloo, float32).

One spawn of 2 processes runs every case (both families x SFT / GRPO x full fine-tuning / LoRA, and
one real rollout per family); each case is then run again on one process on the same global
batches, and the two must agree:

- the loss (GRPO: the step's objective) to rel 1e-4, and every trained weight after two optimiser
  steps to rel 1e-4 / abs 1e-4 (1 % of one step: :data:`WEIGHT_ABS`; the runs sum in other orders).
  The second AdamW step shows a wrong gradient clipping (clip 0.05, below every gradient norm:
  checked), and GRPO uses ``dapo``'s global token count, the KL reference (LoRA: adapter off; full fine-tuning: a sharded frozen copy) and
  three micro-batches per rank;
- each rank trains on its own prompts, and every parameter's local shard is ``torch.chunk``'s
  share of dim 0;
- gradients are reduce-scattered on every micro-batch under full fine-tuning, on the last only
  under LoRA (counted);
- the bytes of parameters + gradients + AdamW states each rank holds (measured on the local
  shards) are about half of what one process holds;
- a rollout all-gathers every unit once (not once per decoding step) and samples the answers the
  unsharded model samples from the same seed;
- GRPO-PTR's judge, sharded over the same ranks, gathers once per judging call and replies as unsharded.

A last test runs `emorl fit` on the GRPO-PTR config under ModelParallelStrategy (full fine-tuning,
judge sharded): the switch and the judge calls are those of the DDP test in test_grpo_ptr.py.
"""

import math

import pytest

from tests.fsdp_cases import CLIP, run_case, spawn_cases
from tests.lalm_fixtures import FAMILIES

pytestmark = pytest.mark.slow

#: 1 % of one AdamW step at lr 1e-2: Adam divides by sqrt(v), so an entry whose gradient is ~0 turns
#: float32 summation-order noise into visible steps; everything else agrees to float precision
WEIGHT_ABS = 1e-4

CASES = [{"kind": kind, "family": family, "lora": lora, "checkpointing": kind == "grpo"}
         for kind in ("sft", "grpo") for family in FAMILIES for lora in (False, True)]
ROLLOUTS = [{"kind": "rollout", "family": family} for family in FAMILIES]
#: the paper configs' compute dtype (bf16 gathers, fp32 reduction); Omni has a never-run vision tower
BF16 = [{"kind": kind, "family": "qwen2.5-omni", "lora": lora, "dtype": "bfloat16", "checkpointing": True}
        for kind, lora in (("grpo", True), ("sft", False))]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    from emorl.textlm import build_tiny_text_lm

    judge = {"kind": "judge", "model": str(build_tiny_text_lm(tmp_path_factory.mktemp("judge") / "lm"))}
    return spawn_cases(CASES + ROLLOUTS + BF16 + [judge], tmp_path_factory.mktemp("fsdp"))


def _name(case):
    return f"{case['kind']}-{case['family']}-{'lora' if case['lora'] else 'full'}"


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_name(c) for c in CASES])
def test_sharded_steps_match_one_process(two_ranks, index):
    case = CASES[index]
    ranks = [two_ranks[r][index] for r in (0, 1)]
    keys = [r["keys"] for r in ranks]
    assert not set(keys[0]) & set(keys[1]) and len(set(keys[0]) | set(keys[1])) == 8  # own prompts per rank
    assert ranks[0]["sharding"] == [] and ranks[1]["sharding"] == []
    # one process, the same two global batches (rank 0's then rank 1's half of each step)
    order = keys[0][:2] + keys[1][:2] + keys[0][2:] + keys[1][2:]
    single = run_case(case, world_size=1, order=order)

    # SFT logs each rank's own mean (equal token counts: their mean is the global one); GRPO the global
    mean = [(a + b) / 2 for a, b in zip(ranks[0]["objective"], ranks[1]["objective"])]
    assert mean == pytest.approx(single["objective"], rel=1e-4, abs=1e-6)
    if case["kind"] == "grpo":  # GRPO clips before optimizer.step: the hook sees the clipped norm
        assert single["norms"] == pytest.approx([CLIP, CLIP], rel=1e-4)
    else:  # Lightning's automatic optimisation clips after the hook: the norm it clipped
        assert min(single["norms"]) > 2 * CLIP
    assert set(ranks[0]["weights"]) == set(single["weights"])
    for name, expected in single["weights"].items():
        assert ranks[0]["weights"][name] == pytest.approx(expected, rel=1e-4, abs=WEIGHT_ABS), name
        assert ranks[1]["weights"][name] == ranks[0]["weights"][name]
    moved = [name for name, before in single["start"].items() if before != pytest.approx(single["weights"][name])]
    assert len(moved) > len(single["start"]) // 2  # the steps did train

    # gradient reduce-scatters per training batch, counted. GRPO full fine-tuning: one per unit with
    # gradients on each of the 3 micro-batches per rank (its projector gets none: the rollout's prompts
    # are kept without grad). GRPO LoRA: only on the last micro-batch, one or two per unit (a unit run
    # twice in a pass, prompt then answers, may reduce twice); on every micro-batch it would be >= 3.
    units = ranks[0]["trained_units"]
    reductions = ranks[0]["reductions"]
    assert units >= 2 and reductions == ranks[1]["reductions"]
    if case["kind"] == "grpo" and not case["lora"]:
        assert reductions == [3 * (units - 1)] * 2
    elif case["kind"] == "grpo":
        assert all(units <= n < 3 * units for n in reductions), (reductions, units)
    else:  # SFT: one micro-batch per step
        assert all(units - 1 <= n <= 2 * units for n in reductions), (reductions, units)

    for step in (0, 1):
        whole = sum(single["bytes"][step].values())
        for rank in ranks:
            per_rank = sum(rank["bytes"][step].values())
            assert 0.45 * whole < per_rank < 0.56 * whole, (step, rank["bytes"][step], single["bytes"][step])
    assert single["bytes"][1]["optimizer"] > 0 and single["bytes"][1]["gradients"] > 0


@pytest.mark.parametrize("index", range(len(ROLLOUTS)), ids=[c["family"] for c in ROLLOUTS])
def test_rollout_gathers_once(two_ranks, index):
    for rank in (0, 1):
        result = two_ranks[rank][len(CASES) + index]
        assert result["units"] > 5
        assert result["gathers"] == result["units"]  # once per unit, not per decoding step (8 of them)
        assert result["texts"] == result["plain_texts"]
    assert two_ranks[0][len(CASES) + index]["texts"] != two_ranks[1][len(CASES) + index]["texts"]


def test_sharded_judge_gathers_once_per_call(two_ranks):
    for rank in (0, 1):
        result = two_ranks[rank][-1]
        # batch_size 2, 3 answers: two generate() calls of 6 tokens, one gather per unit in all
        assert result["sharded_gathers"] == result["units"] == 5  # 2 layers, embeddings, norm, head
        assert result["sharded"] == result["plain"]


@pytest.mark.parametrize("index", range(len(BF16)), ids=[_name(c) for c in BF16])
def test_bf16_compute_with_fp32_reduction_trains(two_ranks, index):
    ranks = [two_ranks[r][len(CASES) + len(ROLLOUTS) + index] for r in (0, 1)]
    assert all(math.isfinite(v) for v in ranks[0]["objective"] + ranks[1]["objective"])
    assert ranks[0]["weights"] == ranks[1]["weights"]
    held = ranks[0]["bytes"][1]
    assert held["optimizer"] == 2 * held["gradients"]  # fp32 masters: fp32 gradients, two fp32 AdamW states


def test_grpo_ptr_full_finetuning_under_fsdp_through_emorl_fit(tmp_path):
    """The EmotionThinker GRPO-PTR config, switched to ModelParallelStrategy: `emorl fit` on 2 processes,
    full fine-tuning, the judge sharded over both ranks; the switch and the judge act as under DDP."""
    import json
    from pathlib import Path

    import yaml

    from emorl.textlm import build_tiny_text_lm
    from tests.corpus_factory import make_tiny_corpus
    from tests.lalm_fixtures import run_emorl, tiny_model_dir, two_process_steps

    root = Path(__file__).resolve().parents[1]
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    config = yaml.safe_load((root / "configs/emotionthinker/ptr_qwen2_audio_meld.yaml").read_text())
    config["trainer"].update(two_process_steps("tests.test_grpo_ptr.RecordPTRRank", tmp_path / "r"))
    config["trainer"]["strategy"] = {"class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
                                     "init_args": {"data_parallel_size": 2, "tensor_parallel_size": 1}}
    args = config["model"]["init_args"]
    args.update({"model": str(tiny_model_dir("qwen2-audio")), "dtype": "float32", "gradient_checkpointing": True,
                 "max_new_tokens": 4, "eval_max_new_tokens": 2, "num_generations": 2, "logprob_micro_batch": 4,
                 "lora": None, "full_finetune": True})
    args["ptr"].update({"accuracy_threshold": 0.0, "accuracy_window": 1})
    judge = build_tiny_text_lm(tmp_path / "judge", hidden_size=32)
    args["judge"].update({"model": str(judge), "dtype": "float32", "max_new_tokens": 4})
    config["data"].update({"data_dir": str(corpus.root), "num_workers": 0, "batch_size": 2})
    run_emorl("fit", config, tmp_path)
    ranks = [json.loads((tmp_path / "r" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["switch"] == ranks[1]["switch"]
    assert [s["on"] for s in ranks[0]["steps"]] == [False, True, True]
    assert ranks[0]["calls"] == ranks[1]["calls"] == 2 * 4  # each rank judges its own answers, together

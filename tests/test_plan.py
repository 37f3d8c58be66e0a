"""``emorl plan``: model sizes without weights, the memory terms against measurements, the verdict, errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emorl.commands import run_command
from emorl.plan import memory
from emorl.plan.command import usable_bytes
from emorl.plan.setting import Setting, read_setting
from emorl.plan.sizes import PlanError, architecture_of, from_config_json
from tests.lalm_fixtures import CARDS, FAMILIES, REPO, tiny_model_dir

GIB = 2 ** 30


def paper_config(tmp_path: Path, source: str = "configs/emorl_esr.yaml") -> Path:
    """A shipped paper config, which holds the paper's setting (full fine-tuning, FSDP2 over 8 GPUs;
    tests/test_rl_configs.py pins it)."""
    data = yaml.safe_load((REPO / source).read_text())
    assert data["trainer"]["strategy"]["class_path"] == "emorl.strategy.FSDP2Strategy"
    assert (data["trainer"]["devices"], data["model"]["init_args"]["full_finetune"]) == (8, True)
    path = tmp_path / Path(source).name  # a copy: the error tests edit it
    path.write_text((REPO / source).read_text())
    return path


def plan(config: Path, *options: str) -> subprocess.CompletedProcess:
    """``emorl plan`` in a fresh interpreter that also reports whether torch got imported."""
    code = ("import sys\nfrom emorl.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nelse:\n    code = 0\nprint('TORCH', 'torch' in sys.modules)\nsys.exit(code)")
    return subprocess.run([sys.executable, "-c", code, "plan", "--config", str(config), *options], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": ""})


# -- sizes -----------------------------------------------------------------------------------------
def test_zoo_sizes_give_the_published_parameter_counts():
    # published: Qwen2-Audio-7B-Instruct 8,397,094,912 (8.4 B); Qwen2.5-7B-Instruct 7,615,616,512 (7.62 B)
    assert architecture_of("qwen2-audio-7b-instruct").total == 8_397_094_912
    assert architecture_of("Qwen/Qwen2.5-7B-Instruct").total == 7_615_616_512
    # a judge folder that is not on this machine resolves by its name (configs/emotionthinker_ptr.yaml)
    assert architecture_of("models/Qwen2.5-7B-Instruct").total == 7_615_616_512
    from emorl import zoo

    for card in zoo.list_cards():
        if card.sizes:
            counts = architecture_of(card.name).counts
            assert card.sizes["parameters"] == {**counts, "total": sum(counts.values())}, card.name


@pytest.mark.parametrize("family", FAMILIES)
def test_sizes_from_config_json_match_the_instantiated_tiny_model(family):
    from emorl.lalm.backbone import load_backbone

    arch = from_config_json(tiny_model_dir(family))
    model = load_backbone(tiny_model_dir(family)).hf_model
    parts = {"language_model": model.model.language_model, "lm_head": model.lm_head}
    numel = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
    assert {k: arch.counts[k] for k in numel} == numel
    assert arch.total == sum(p.numel() for p in model.parameters())
    assert arch.family == family


def test_the_chunk_size_is_scorings():
    from emorl.lalm.scoring import LOGIT_CHUNK_ROWS
    from emorl.plan.setting import LOGIT_CHUNK_ROWS as read

    assert read == LOGIT_CHUNK_ROWS


def test_kv_cache_counts_kv_heads_not_query_heads():
    omni = architecture_of(CARDS["qwen2.5-omni"]).text  # 28 query heads, 4 KV heads of 128
    assert omni.kv_bytes_per_token(2) == 2 * 28 * 4 * 128 * 2
    audio = architecture_of(CARDS["qwen2-audio"]).text  # 32 KV heads of 128
    assert audio.kv_bytes_per_token(2) == 2 * 32 * 32 * 128 * 2


# -- the verdict -------------------------------------------------------------------------------------
def test_the_paper_setting_fits_on_8_x_48_not_on_1_x_80(tmp_path):
    config = paper_config(tmp_path)
    done = plan(config, "--devices", "8", "--gpu-memory", "48")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[-1] == "TORCH False"  # starts fast: no torch
    assert lines[-2] == "fits"
    assert "sharded over 8 GPUs" in done.stdout and "reference copy" in done.stdout
    done = plan(config, "--devices", "1", "--gpu-memory", "80")
    assert done.returncode == 1, done.stderr
    text = done.stdout
    verdict = text[text.index("does not fit"):]
    assert "LoRA" in verdict and "GPUs (--devices" in verdict


def test_the_suggested_device_count_is_the_smallest_that_fits(tmp_path):
    setting = read_setting(paper_config(tmp_path), devices=1)
    usable = usable_bytes(80)
    from emorl.plan.command import remedies_for

    suggestion = next(r for r in remedies_for(setting, usable) if "smallest device count" in r)
    world = int(suggestion.split()[0])
    assert memory.peak_of(setting.with_(devices=world))[1] <= usable < memory.peak_of(setting.with_(devices=world - 1))[1]


def test_replicated_full_fine_tuning_is_told_to_shard(tmp_path):
    from emorl.plan.command import report

    setting = read_setting(paper_config(tmp_path)).with_(sharded=False, strategy="ddp")
    lines, fits = report(setting, 48)
    assert not fits and "replicated on each of 8 GPU(s)" in "\n".join(lines)
    assert any("with trainer.strategy emorl.strategy.FSDP2Strategy" in line for line in lines[lines.index(
        next(line for line in lines if line.startswith("does not fit"))):])
    # DDP holds AdamW's 8 bytes a parameter (of the 16) whole on every GPU
    states = next(t.bytes for t in memory.plan_terms(setting) if t.name == "optimiser states")
    assert states == 8 * memory.trainable_parameters(setting)


def test_an_sft_config_has_no_rollout(tmp_path):
    setting = read_setting(REPO / "configs/sft/lora/sft_ir_meld.yaml")  # one GPU, LoRA
    assert setting.module == "sft" and setting.lora_r == 8
    phases = memory.phases_of(setting)
    assert "rollout" not in phases and "reference" not in phases and "logits" in phases
    assert memory.peak_of(setting)[1] <= usable_bytes(80)


def test_the_peak_is_one_phase_not_the_sum_of_every_term(tmp_path):
    setting = read_setting(paper_config(tmp_path))
    terms = memory.plan_terms(setting)
    phase, peak = memory.peak_of(setting)
    assert peak < sum(t.bytes for t in terms)
    # the unsharded generation copy and the loss's logits never meet
    copy = next(t for t in terms if t.name.startswith("generation copy"))
    logits = next(t for t in terms if t.name == "vocabulary logits")
    assert not set(copy.phases) & set(logits.phases)
    # sharding divides the persistent terms by the world size, not the generation copy
    one = {t.name: t.bytes for t in memory.plan_terms(setting.with_(devices=1))}
    eight = {t.name: t.bytes for t in terms}
    assert eight["optimiser states"] * 8 == pytest.approx(one["optimiser states"], rel=1e-6)
    assert eight["generation copy (unsharded)"] == one["generation copy (unsharded)"]


def test_ptr_counts_its_judge(tmp_path):
    setting = read_setting(paper_config(tmp_path, "configs/emotionthinker_ptr.yaml"))
    terms = {t.name: t for t in memory.plan_terms(setting)}
    assert terms["PTR judge (resident)"].bytes == 2 * 7_615_616_512 // 8
    assert terms["PTR judge (unsharded)"].phases == ("judge",)
    assert "judge" in memory.phase_totals(list(terms.values()), memory.phases_of(setting))
    without = setting.with_(judge=None)
    assert memory.peak_of(without)[1] < memory.peak_of(setting)[1]
    # the vision tower is frozen: the root group's gradients are the embeddings', lm_head's and projector's
    counts = setting.arch.counts
    root_trained = counts["language_model"] - 28 * setting.arch.text.layer_parameters() + counts["lm_head"] \
        + counts["projector"]
    assert terms["root gradients (unsharded)"].bytes == (2 + 4) * root_trained
    done = plan(paper_config(tmp_path, "configs/emotionthinker_ptr.yaml"), "--gpu-memory", "48")
    assert "PTR judge KV cache" in done.stdout
    assert done.stdout.strip().splitlines()[-2] == "fits"  # EmotionThinker's setting with its judge on 8 x 48 GB


# -- against measurements ----------------------------------------------------------------------------
def test_lora_7b_benchmark_peak_minus_weights(tmp_path):
    """docs/rl.md, "One GRPO step at the real size": Qwen2-Audio-7B sizes, LoRA r 8, checkpointing, G 6,
    beta 0.04, one 10 s clip, 256 new tokens, 6 answers per log-prob pass, no validation; measured on one
    H100 (tools/bench_grpo_7b.py at commit 6e4da52: full-sequence log-prob passes, logits not chunked):
    15.7 GiB of weights, 20.8 GiB peak -> 5.1 GiB."""
    path = tmp_path / "bench.yaml"
    data = yaml.safe_load((REPO / "configs/emorl_esr.yaml").read_text())
    data["trainer"].update(devices=1, strategy="auto")
    data["model"]["init_args"].update(full_finetune=False, lora={"r": 8, "alpha": 16, "dropout": 0.05},
                                      num_generations=6, max_new_tokens=256, beta=0.04, logprob_micro_batch=6)
    data["data"]["max_seconds"] = 10.0
    path.write_text(yaml.safe_dump(data))
    setting = read_setting(path).with_(share_prompts=False, logit_chunk_rows=None, eval_batch_size=0)
    assert setting.prompt_tokens > 250  # 250 audio tokens + the ESR question
    weights = next(t.bytes for t in memory.plan_terms(setting) if t.name == "weights")
    assert weights / GIB == pytest.approx(15.7, abs=0.1)
    predicted = (memory.peak_of(setting)[1] - weights) / GIB
    assert predicted == pytest.approx(5.1, rel=0.25)


class StorageTracker:
    """Bytes of the tensor storages created inside it and still alive (an independent CPU oracle: every
    op's new output storage is counted until Python frees it), and their peak."""

    def __init__(self, existing):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.weak import WeakIdKeyDictionary

        tracker = self
        self.live = self.peak = 0
        self.seen = WeakIdKeyDictionary()
        for tensor in existing:  # weights and inputs: their views (weight.t()) are not new memory
            self.seen[tensor.untyped_storage()] = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker.count(out)
                return out

        self.mode = Mode()

    def count(self, out) -> None:
        import weakref

        import torch
        from torch.utils._pytree import tree_flatten

        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage() not in self.seen:
                storage = tensor.untyped_storage()
                self.seen[storage] = storage.nbytes()
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._free, storage.nbytes())

    def _free(self, size: int) -> None:
        self.live -= size


@pytest.fixture(scope="module")
def wider_tiny(tmp_path_factory):
    """A random Qwen2-Audio of 4 layers of 256 (MLP 1024, 4 heads, 2 KV heads): activations dominate."""
    from emorl.lalm.tiny import build_tiny_family

    sizes = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2)
    return build_tiny_family("qwen2-audio", tmp_path_factory.mktemp("wider"), sizes=sizes)


@pytest.mark.slow
@pytest.mark.parametrize("share_prompts", [True, False])
def test_loss_pass_terms_match_tracked_storages(wider_tiny, share_prompts):
    """GRPO's policy pass (6 answers of 96 tokens after a 6 s clip's prompt, fp32, full fine-tuning,
    checkpointing, entropy): what is alive at the end of the forward and the peak through backward, against
    the plan's logits and backward phases (without the weights and optimiser states, which exist before)."""
    import torch

    from emorl.lalm.backbone import load_backbone
    from emorl.lalm.inputs import build_prompts, embed_prompts
    from emorl.lalm.scoring import completion_scores
    from tests.lalm_fixtures import clips, messages

    backbone = load_backbone(wider_tiny, dtype="float32", full_finetune=True, gradient_checkpointing=True)
    backbone.hf_model.train()
    with torch.no_grad():
        prompt = embed_prompts(backbone, build_prompts(backbone, messages(1), clips((6.0,))))
    answers, new = 6, 96
    ids = torch.randint(0, 600, (answers, new), generator=torch.Generator().manual_seed(0))
    tracker = StorageTracker([*backbone.hf_model.parameters(), *backbone.hf_model.buffers(), prompt.inputs_embeds,
                              prompt.attention_mask])
    with tracker.mode:
        logps, _ = completion_scores(backbone, prompt, ids, prompt_index=torch.zeros(answers, dtype=torch.long),
                                     with_entropy=True, share_prompts=share_prompts)
        loss = logps.sum()
        forward_end = tracker.live
        loss.backward()
    setting = Setting(arch=from_config_json(wider_tiny), module="grpo", full_finetune=True, dtype_bytes=4,
                      prompt_tokens=int(prompt.inputs_embeds.shape[1]), num_generations=answers, max_new_tokens=new,
                      micro_batch=answers, beta=0.0, eval_batch_size=0, share_prompts=share_prompts)
    terms = [t for t in memory.plan_terms(setting) if t.name not in ("weights", "optimiser states")]
    at = {phase: sum(t.bytes for t in terms if phase in t.phases) for phase in ("logits", "backward")}
    gradients = next(t.bytes for t in terms if t.name == "gradients")
    assert forward_end == pytest.approx(at["logits"] - gradients, rel=0.20)  # no gradients yet at that moment
    assert tracker.peak == pytest.approx(at["backward"], rel=0.15)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_bytes(tensor) -> int:
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def _shard_worker(rank: int, world: int, port: int, out: str, folders: dict) -> None:
    """One rank: each tiny model, fp32, full fine-tuning and LoRA; fully_shard per decoder layer + root;
    one forward/backward with audio and one AdamW step; write this rank's local bytes."""
    import os

    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from emorl.lalm.backbone import load_backbone
    from emorl.lalm.inputs import build_prompts
    from tests.lalm_fixtures import clips, messages  # noqa: F811 (the child imports afresh)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    results = {}
    for family in FAMILIES:
        for trained, options in (("full", {"full_finetune": True}), ("lora", {"lora": {"r": 4}})):
            backbone = load_backbone(folders[family], dtype="float32", **options)
            batch = build_prompts(backbone, messages(2), clips((1.0, 0.6)))
            for layer in backbone.language_model.layers:
                fully_shard(layer)
            model = fully_shard(backbone.model)
            params = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(params, lr=1e-3)
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                           input_features=batch.input_features, feature_attention_mask=batch.feature_attention_mask).logits
            logits.float().pow(2).mean().backward()
            optimizer.step()
            states = [v for state in optimizer.state.values() for v in state.values() if v.dim() > 0]
            results[f"{family}/{trained}"] = {
                "weights": sum(_local_bytes(p) for p in model.parameters()),
                "gradients": sum(_local_bytes(p.grad) for p in params if p.grad is not None),
                "optimiser states": sum(_local_bytes(v) for v in states),
                "missing_grads": sum(p.grad is None for p in params),
            }
    Path(out, f"rank{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.mark.slow
def test_predicted_shard_bytes_match_fully_shard(tmp_path):
    import torch.multiprocessing as mp

    folders = {family: str(tiny_model_dir(family)) for family in FAMILIES}  # built once, here
    mp.spawn(_shard_worker, args=(2, _free_port(), str(tmp_path), folders), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for key, measured in ranks[0].items():
        family, trained = key.split("/")
        assert measured["missing_grads"] == 0, key
        setting = Setting(arch=from_config_json(tiny_model_dir(family)), module="grpo", devices=2, sharded=True,
                          full_finetune=trained == "full", lora_r=4 if trained == "lora" else None, dtype_bytes=4)
        predicted = {t.name: t.bytes for t in memory.plan_terms(setting)}
        for name in ("weights", "gradients", "optimiser states"):
            for rank in ranks:
                assert rank[key][name] == pytest.approx(predicted[name], rel=0.10), (key, name)
        # and world size 2 holds about half of world size 1
        alone = {t.name: t.bytes for t in memory.plan_terms(setting.with_(devices=1))}
        assert predicted["optimiser states"] * 2 == pytest.approx(alone["optimiser states"], rel=0.01)


# -- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, options, message", [
    ({"model": "no-such-model"}, ["--devices", "8", "--gpu-memory", "48"], "no-such-model"),
    (None, ["--devices", "0", "--gpu-memory", "48"], "--devices"),
    (None, ["--devices", "two", "--gpu-memory", "48"], "--devices"),
    (None, ["--devices", "8", "--nodes", "-1", "--gpu-memory", "48"], "--nodes"),
    (None, ["--devices", "8", "--gpu-memory", "lots"], "--gpu-memory"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, change, options, message):
    config = paper_config(tmp_path)
    if change:
        data = yaml.safe_load(config.read_text())
        data["model"]["init_args"].update(change)
        config.write_text(yaml.safe_dump(data))
    assert run_command(["plan", "--config", str(config), *options]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("emorl plan: error:") and message in err


def test_a_missing_config_is_one_line_and_status_2(tmp_path, capsys):
    assert run_command(["plan", "--config", str(tmp_path / "nope.yaml"), "--gpu-memory", "80"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope.yaml" in err


def test_plan_error_is_an_emorl_error():
    from emorl.errors import EmorlError

    assert issubclass(PlanError, EmorlError)

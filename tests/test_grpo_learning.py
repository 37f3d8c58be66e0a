"""GRPO learns: on the demo corpus, from an SFT warm start, a short GRPO run raises the mean reward.

The warm start is one epoch of SFT + IR (the tiny random model then answers in format about half
the time and rarely right); GRPO with format + ESWR rewards then has to push both up from its own
samples. The format term is ``format_ir_syntax`` (the tags alone): EMO-RL's ``format_ir`` also needs
the right label, which 16 steps of a tiny model cannot learn much of. Rewards are read from the
run's TensorBoard log (``train/reward``, one value per step).
"""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from emorl import tiny_models, zoo
from emorl.lightning_cli import EmorlCLI
from emorl.data.corpora import prepare_ravdess
from emorl.data.synth import synthesize

pytestmark = [pytest.mark.slow, pytest.mark.espeak]
CONFIGS = zoo.ZOO_DIR.parent / "configs"


@pytest.fixture(scope="module")
def demo_corpus(tmp_path_factory, espeak):
    root = tmp_path_factory.mktemp("demo_grpo")
    synthesize(root / "raw")  # the full demo corpus (720 clips)
    prepare_ravdess(root / "raw", root / "prepared")
    return root / "prepared"


def test_grpo_from_an_sft_warm_start_raises_the_mean_reward(demo_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tiny_models.build_tiny("qwen2-audio-7b-instruct", tmp_path / "tiny-qwen2-audio", seed=0)
    common = ["--model.init_args.model", str(model), "--data.data_dir", str(demo_corpus)]
    sft = EmorlCLI(args=["--config", str(CONFIGS / "demo/tiny_sft_ir.yaml"), *common,
                         "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0"], run=False)
    sft.trainer.fit(sft.model, datamodule=sft.datamodule)
    warm_start = tmp_path / "warm_start.ckpt"
    sft.trainer.save_checkpoint(warm_start)

    grpo = EmorlCLI(args=[
        "--config", str(CONFIGS / "demo/tiny_emorl_esr.yaml"), *common,
        "--model.init_args.init_checkpoint", str(warm_start), "--model.init_args.prompt_format", "ir",
        "--model.init_args.rewards", "[{name: format_ir_syntax, weight: 1.0}, {name: eswr, weight: 1.0}]",
        "--model.init_args.max_new_tokens", "12", "--model.init_args.lr", "1e-3",
        "--trainer.max_steps", "16", "--data.batch_size", "16",
    ], run=False)
    grpo.trainer.fit(grpo.model, datamodule=grpo.datamodule)
    events = EventAccumulator(grpo.trainer.log_dir).Reload()
    rewards = [e.value for e in events.Scalars("train/reward")]
    formats = [e.value for e in events.Scalars("train/reward/format_ir_syntax")]
    assert len(rewards) == 16
    first, last = sum(rewards[:6]) / 6, sum(rewards[-6:]) / 6
    assert last > first + 0.1, rewards
    assert sum(formats[-6:]) / 6 > sum(formats[:6]) / 6, formats
    # the logged format rate is the share of answers in IR's shape: here exactly the format_ir_syntax reward
    assert [e.value for e in events.Scalars("train/format_rate")] == pytest.approx(formats)

"""SFT learns: the tiny Qwen2-Audio, trained on the demo corpus, answers in format and above chance."""

import pytest

from emorl import tiny_models, zoo
from emorl.lightning_cli import EmorlCLI
from emorl.data.corpora import prepare_ravdess
from emorl.data.synth import synthesize

pytestmark = [pytest.mark.slow, pytest.mark.espeak]


@pytest.fixture(scope="module")
def demo_corpus(tmp_path_factory, espeak):
    root = tmp_path_factory.mktemp("demo_lalm")
    synthesize(root / "raw", sentences_per_emotion=2)
    prepare_ravdess(root / "raw", root / "prepared")
    return root / "prepared"


def test_sft_on_the_demo_corpus_answers_in_format_and_above_chance(demo_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tiny_models.build_tiny("qwen2-audio-7b-instruct", tmp_path / "tiny-qwen2-audio", seed=0)
    cli = EmorlCLI(args=["--config", str(zoo.ZOO_DIR.parent / "configs/demo/tiny_sft_ir.yaml"),
                         "--model.init_args.model", str(model), "--data.data_dir", str(demo_corpus)], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path="best")
    scores = cli.model.test_results["ravdess"]  # held-out actors 1 and 20
    chance = 1 / 8
    assert scores["parse_rate"] >= 0.95, scores
    assert scores["ua"] > 1.6 * chance, scores

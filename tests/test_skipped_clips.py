"""Training clips that cannot be loaded: counted per epoch, said once per clip, and a fit whose every
clip fails stops with one line instead of looping for ever."""

import logging
import subprocess
import sys

import lightning as L
import pytest
import torch

from emorl.data.datamodule import EmoDataModule
from emorl.data.skips import (
    SKIPPED_KEY,
    AllClipsSkippedError,
    CountingCollate,
    EpochSkips,
    SkippedBatch,
    epoch_verdict,
    take_count,
)
from emorl.models.grpo import GRPOLALM
from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import REPO, tiny_model_dir


def test_the_collate_wrapper_counts_none_items_and_marks_batches_with_no_clip():
    collate = CountingCollate(lambda items: {"key": [i["key"] for i in items if i]} if any(items) else None)
    batch = collate([{"key": "a"}, None, {"key": "b"}])
    assert batch[SKIPPED_KEY] == 1
    assert take_count(batch) == ({"key": ["a", "b"]}, 3, 1) and SKIPPED_KEY not in batch
    assert collate([None, None]) == SkippedBatch(2)
    assert take_count(SkippedBatch(2)) == (None, 2, 2)
    assert take_count({"key": ["a"]}) is None  # an evaluation batch: not counted, left alone


def test_epoch_verdict():
    skips = EpochSkips(epoch=3)
    for clips, skipped in [(4, 4), (4, 4), (2, 2)]:
        skips.add(clips, skipped)
    with pytest.raises(AllClipsSkippedError, match=r"epoch 3 \(10 of 10 skipped; e.g. k1: bad; k2: bad\)"):
        epoch_verdict(skips, "data/x", 0.05, lambda: ["k1: bad", "k2: bad"])
    skips = EpochSkips(epoch=0)
    skips.add(4, 1)
    skips.add(4, 0)
    assert "1 of 8 training clips of data/x (12 %)" in epoch_verdict(skips, "data/x", 0.1, list)
    assert epoch_verdict(skips, "data/x", 0.2, list) is None  # 12.5 % is within 20 %


def _break_every_training_clip(root, speakers=("s1", "s2", "s3", "s4")):
    """Overwrite the clips of ``speakers`` (every training speaker by default; s5 is the test speaker)."""
    for path in (root / "audio").glob("*.wav"):
        if path.name.split("_")[0] in speakers:
            path.write_bytes(b"RIFF not a wav at all")


@pytest.mark.timeout(300)  # before the fix it looped for ever
def test_a_grpo_fit_whose_every_clip_fails_stops_with_the_reasons(tmp_path, caplog):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    _break_every_training_clip(tmp_path / "c")
    module = GRPOLALM(["neutral", "happy", "sad", "angry"], model=str(tiny_model_dir("qwen2-audio")), dtype="float32",
                      num_generations=2, max_new_tokens=2, beta=0.0, lora={"r": 2, "alpha": 4, "dropout": 0.0},
                      prompt_format="ir", rewards=["format_ir"])
    data = EmoDataModule(str(corpus.root), batch_size=4, num_workers=0, seed=0)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                        enable_model_summary=False)
    with caplog.at_level(logging.WARNING, logger="emorl.data.dataset"), \
            pytest.raises(AllClipsSkippedError, match=r"no training clip of .* could be loaded in epoch 0 "
                                                       r"\(\d+ of \d+ skipped; e\.g\. tiny-s1-"):
        trainer.fit(module, datamodule=data)
    assert trainer.global_step == 0
    skipped_lines = [r for r in caplog.records if r.getMessage().startswith("skipping clip")]
    assert len(skipped_lines) == len({r.getMessage().split()[2] for r in skipped_lines})  # once per clip


def test_the_cli_says_it_in_one_line_with_exit_status_2(tmp_path):
    import yaml

    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    _break_every_training_clip(tmp_path / "c")
    config = yaml.safe_load((REPO / "configs/demo/acoustic.yaml").read_text())
    config["trainer"].update(max_epochs=2, logger=False, callbacks=None, enable_checkpointing=False)
    config["data"]["data_dir"] = str(corpus.root)
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run([sys.executable, "-m", "emorl", "fit", "--config", str(path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": ""})
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert errors == [errors[0]] and errors[0].startswith("emorl fit: error: no training clip of ")
    assert "emorl data check" in errors[0]


def test_an_epoch_with_a_few_skipped_clips_trains_and_says_so_once(tmp_path, caplog):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    _break_every_training_clip(tmp_path / "c", speakers=("s1",))  # a quarter of the training clips
    data = EmoDataModule(str(corpus.root), batch_size=4, num_workers=0, seed=0, max_skip_share=0.1)
    data.setup("fit")

    class Trainer:  # what the loader and the hook read of the trainer
        current_epoch = 0
        lightning_module = None
        num_training_batches = len(data.train_dataloader())

    data.trainer = Trainer()
    with caplog.at_level(logging.WARNING, logger="emorl.data.datamodule"):
        batches = [data.on_before_batch_transfer(b, 0) for b in data.train_dataloader()]
    broken = sum(row["speaker"] == "s1" for row in data.datasets["train"].rows)
    assert broken >= 2 and all(b is None or SKIPPED_KEY not in b for b in batches)
    assert data.epoch_skips.skipped == broken and data.epoch_skips.clips == len(data.datasets["train"])
    warnings = [r.getMessage() for r in caplog.records if "could not be loaded and were skipped" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith(f"epoch 0: {broken} of {data.epoch_skips.clips} training clips")
    assert sum(len(b["key"]) for b in batches if b is not None) == data.epoch_skips.clips - broken
    assert torch.is_tensor(next(b for b in batches if b is not None)["wave"])

"""``--ckpt_path`` and ``init_checkpoint``: a checkpoint of another model is refused, a file that is not a
checkpoint is one line, and a pickle payload in a file handed to emorl never runs."""

import pickle

import pytest
import torch

from emorl.cli import main
from emorl.models.checkpoints import read_checkpoint
from emorl.models.identity import architecture_signature, identity_mismatches
from tests.corpus_factory import make_tiny_corpus
from tests.lalm_fixtures import REPO, tiny_model_dir

GRPO = "emorl.models.grpo.GRPOLALM"


def _grpo(**init_args):
    return {"class_path": GRPO, "init_args": {"model": "m", "prompt_format": "esr", "lora": {"r": 8, "alpha": 16},
                                             "full_finetune": False, "dtype": "bfloat16", **init_args}}


def test_identity_differences_are_named_and_portable_ones_are_not():
    saved = {"_class_path": GRPO, "model": "m", "prompt_format": "esr", "lora": {"r": 8, "alpha": 16},
             "full_finetune": False, "dtype": "float32", "eval_max_new_tokens": 8, "lr": 1e-3}
    same = identity_mismatches(_grpo(eval_max_new_tokens=256, lr=1e-6), saved)  # dtype, lengths, lr: portable
    assert same.refused == [] and same.replaced == []
    other_format = identity_mismatches(_grpo(prompt_format="ir"), saved)
    assert other_format.refused == [] and other_format.replaced == ["prompt_format 'esr' (config: 'ir')"]
    assert identity_mismatches(_grpo(lora={"r": 2, "alpha": 4}), saved).replaced[0].startswith("lora {'r': 8")
    sft = identity_mismatches({"class_path": "emorl.models.sft.SFTLALM", "init_args": {"prompt_format": "esr"}}, saved)
    assert sft.refused == [] and sft.replaced == [f"module {GRPO} (config: emorl.models.sft.SFTLALM)"]
    probe = identity_mismatches({"class_path": "emorl.models.probe.LinearProbe", "init_args": {}}, saved)
    assert probe.refused == [f"an audio-language model ({GRPO}) where the config has a probe "
                             "(emorl.models.probe.LinearProbe)"]


def test_the_base_model_family_and_sizes_count_when_both_are_here(tmp_path):
    audio, omni = str(tiny_model_dir("qwen2-audio")), str(tiny_model_dir("qwen2.5-omni"))
    assert architecture_signature(audio) == architecture_signature(audio) != architecture_signature(omni)
    assert architecture_signature(str(tmp_path / "moved")) is None  # not here: not compared
    saved = {"_class_path": GRPO, "model": omni, "prompt_format": "esr"}
    assert "another architecture or size" in identity_mismatches(_grpo(model=audio), saved).refused[0]
    assert identity_mismatches(_grpo(model=str(tmp_path / "moved")), {**saved, "model": audio}).refused == []


def _test(tmp_path, ckpt, capsys):
    corpus = make_tiny_corpus(tmp_path / "c", per_speaker_label=1)
    with pytest.raises(SystemExit) as done:
        main(["test", "--config", str(REPO / "configs/demo/acoustic.yaml"), "--data.data_dir", str(corpus.root),
              "--trainer.logger", "false", "--ckpt_path", str(ckpt)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    return done.value.code, lines


def test_emorl_test_refuses_a_checkpoint_of_another_model(tmp_path, capsys):
    ckpt = tmp_path / "probe.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"_class_path": "emorl.models.probe.LinearProbe",
                                                       "upstream": "wavlm-large"}}, ckpt)
    code, lines = _test(tmp_path, ckpt, capsys)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"emorl test: error: --ckpt_path {ckpt} holds another model than the config's: "
                               "a probe (emorl.models.probe.LinearProbe) where the config has an acoustic baseline "
                               "(emorl.models.acoustic.AcousticBaseline), give the config it was trained with")


def test_a_file_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    code, lines = _test(tmp_path, text, capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"emorl test: error: --ckpt_path {text}: not a checkpoint")


class _Payload:
    """Unpickling it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_payload_is_never_executed(tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"state_dict": {}, "x": _Payload(marker)}))
    with pytest.raises(ValueError, match="init_checkpoint .*evil.ckpt: not a checkpoint that loads with weights_only"):
        read_checkpoint(evil, "init_checkpoint")
    code, lines = _test(tmp_path, evil, capsys)
    assert code == 2 and "not a checkpoint" in lines[0]
    torch.save({"state_dict": {}, "x": _Payload(marker)}, tmp_path / "evil_zip.ckpt")  # torch's own format too
    with pytest.raises(ValueError, match="weights_only"):
        read_checkpoint(tmp_path / "evil_zip.ckpt")
    assert not marker.exists()

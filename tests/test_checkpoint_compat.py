"""A run interrupted before a change of emorl resumes after it: the checkpoints of
``tests/data/compat`` (written by an earlier emorl, see :mod:`tests.compat_checkpoints`) resume
with today's code and reach the weights their uninterrupted run reached."""

import pytest
import torch

from emorl.rl.rewards import REWARDS
from tests.compat_checkpoints import COMPAT, SAVED_AT, STEPS, answer_length, run


@pytest.mark.parametrize("kind", ["grpo", "sft"])
def test_an_old_checkpoint_resumes_to_the_weights_of_its_uninterrupted_run(kind, tmp_path, monkeypatch):
    monkeypatch.setitem(REWARDS, "answer_length", answer_length)
    torch.set_num_threads(1)  # the kept weights were computed with one thread
    checkpoint = COMPAT / f"{kind}_step{SAVED_AT}.ckpt"
    expected = torch.load(COMPAT / f"{kind}_step{STEPS}_weights.pt", map_location="cpu", weights_only=True)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    assert set(saved) == set(expected)  # the checkpoint holds the trained weights only
    assert any(not torch.equal(saved[name], expected[name]) for name in expected)  # steps 3-4 moved them
    resumed = run(kind, tmp_path, STEPS, ckpt_path=str(checkpoint))
    assert set(resumed) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(resumed[name], value, rtol=1e-5, atol=1e-6, msg=name)

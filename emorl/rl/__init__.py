"""Reinforcement learning for SER: the emotion wheel, rewards, group advantages, the GRPO loss, the
rollout, and GRPO-PTR.

- pure functions, no Lightning and no models: :mod:`~emorl.rl.wheel`, :mod:`~emorl.rl.rewards`,
  :mod:`~emorl.rl.advantages`, :mod:`~emorl.rl.loss`, :mod:`~emorl.rl.schedule`, and the math of
  :mod:`~emorl.rl.ptr`;
- :mod:`~emorl.rl.rollout` samples G answers per prompt from a backbone and scores them;
- :mod:`~emorl.rl.judge` loads a local text LM that grades reasoning (GRPO-PTR), and
  :class:`emorl.rl.ptr.PTRRewards` turns its grades into the reasoning reward.

:class:`emorl.models.grpo.GRPOLALM` orchestrates them.
"""

"""Reinforcement learning for SER: the emotion wheel, rewards, group advantages and the GRPO loss.

Small pure functions (no Lightning, no models) that the GRPO LightningModule orchestrates.
"""

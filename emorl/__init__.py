"""emorl: speech emotion recognition with audio-language models trained by reinforcement learning."""

__version__ = "0.1.0"

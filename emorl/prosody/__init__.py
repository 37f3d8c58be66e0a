"""Prosody for EmotionThinker: what a clip's voice does, and what a text says it does.

(Package being assembled: the measures, bins and captions move here from ``emorl.data.prosody``.)
"""

"""Audio-language backbones (Qwen2-Audio, the Qwen2.5-Omni thinker): loading, chat inputs with
the audio tower run once per clip, batched generation, completion log-probs (scoring), tiny test models.
See ``docs/lalm.md``."""

from emorl.lalm.backbone import Backbone, BackboneError, detect_family, load_backbone
from emorl.lalm.generation import GenerationResult, cut_at_stop, generate
from emorl.lalm.inputs import PromptBatch, PromptEmbeds, build_prompts, embed_prompts, render_prompts
from emorl.lalm.scoring import completion_scores

__all__ = [
    "Backbone", "BackboneError", "GenerationResult", "PromptBatch", "PromptEmbeds", "build_prompts",
    "completion_scores", "cut_at_stop", "detect_family", "embed_prompts", "generate", "load_backbone",
    "render_prompts",
]

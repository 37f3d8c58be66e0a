"""``emorl export``: a trained run -> a Hugging Face model folder or PEFT adapter, with a model card.

- :mod:`emorl.export.source`: the run's config and checkpoint (nothing loaded);
- :mod:`emorl.export.weights`: trained weights onto the base, LoRA merged in fp32, the folder;
- :mod:`emorl.export.card`: the model card and its transformers snippet;
- :mod:`emorl.export.command`: the command (``docs/export.md``).
"""

from emorl.export.command import export_model, run_export
from emorl.export.source import ExportError

__all__ = ["ExportError", "export_model", "run_export"]

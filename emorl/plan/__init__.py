"""``emorl plan``: the memory a training config needs per GPU, before any GPU is touched.

- :mod:`emorl.plan.sizes`: a model's sizes and parameter counts from a zoo card or a config.json;
- :mod:`emorl.plan.setting`: the config (plain YAML) -> :class:`~emorl.plan.setting.Setting`;
- :mod:`emorl.plan.memory`: bytes per term and phase, the peak;
- :mod:`emorl.plan.command`: the command's table, verdict and remedies.

Nothing here imports torch: ``emorl plan`` starts in well under a second. docs/scale.md explains
the model and shows its table for the papers' settings.
"""

"""``emorl report``: runs -> a table beside EMO-RL's published numbers, and figures (``docs/report.md``).

- :mod:`emorl.report.runs`: a run folder's records (config, ``test_results.json``, predictions, events);
- :mod:`emorl.report.table`: rows, the published-row match (``published.yaml``), CSV and markdown;
- :mod:`emorl.report.figures`: UA bars with published markers, confusion matrices, training curves;
- :mod:`emorl.report.command`: the command.
"""

from emorl.report.command import write_report

__all__ = ["write_report"]

"""Text tables and figures to every logger of a trainer: TensorBoard, Weights & Biases, CSV.

Lightning's ``self.log`` reaches every logger with scalars; the answer samples and figures emorl
logs beside them went through TensorBoard's writer only. These functions send them to each of
``trainer.loggers``:

- ``TensorBoardLogger``: ``add_text`` (a markdown table) and ``add_figure``, as before;
- ``WandbLogger``: ``log_table`` (a ``wandb.Table`` with the columns) and ``log_image``;
- ``CSVLogger``: files in its run folder, ``text/<tag>.md`` (appended per step) and
  ``figures/<tag>-step<N>.png``;
- any other logger whose ``experiment`` has ``add_text`` / ``add_figure``: those.

Only global rank 0 logs (the callers check). Checkpoints, predictions and ``test_results.json``
stay in the run folder whatever the logger.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Sequence

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A markdown table; ``|`` and newlines inside cells are escaped."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def _file_name(tag: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", tag)


def figure_png(figure) -> bytes:
    """A matplotlib figure rendered to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def log_table(trainer, tag: str, columns: Sequence[str], rows: Sequence[Sequence], step: int) -> None:
    """A small table of text (e.g. sample answers) to every logger of ``trainer``."""
    text = markdown_table(columns, rows)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_table(key=tag, columns=list(columns), data=[[str(v) for v in row] for row in rows], step=None)
        elif isinstance(logger, CSVLogger):
            path = Path(logger.log_dir) / "text" / f"{_file_name(tag)}.md"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(f"## {tag}, step {step}\n\n{text}\n\n")
        elif hasattr(getattr(logger, "experiment", None), "add_text"):
            logger.experiment.add_text(tag, text, global_step=step)


def log_figure(trainer, tag: str, figure, step: int) -> None:
    """A matplotlib figure to every logger of ``trainer``."""
    png = None
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            from PIL import Image

            png = png or figure_png(figure)
            logger.log_image(key=tag, images=[Image.open(io.BytesIO(png))], step=None)
        elif isinstance(logger, CSVLogger):
            path = Path(logger.log_dir) / "figures" / f"{_file_name(tag)}-step{step}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            png = png or figure_png(figure)
            path.write_bytes(png)
        elif isinstance(logger, TensorBoardLogger) or hasattr(getattr(logger, "experiment", None), "add_figure"):
            logger.experiment.add_figure(tag, figure, global_step=step, close=False)

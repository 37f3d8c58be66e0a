"""A clean console: the known third-party warnings silenced by their exact message, and progress bars.

``emorl demo`` calls :func:`quiet_console` (``--verbose``: not at all); ``emorl fit / test / ...``
call :func:`quiet_known_warnings`. Only the messages listed in :data:`KNOWN_WARNINGS` and
:data:`KNOWN_INFO` are dropped, each matched whole (its variable parts as narrow patterns), so a
new warning, any error and any message of emorl's still shows; each entry says why it is noise.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

#: (message pattern matched whole, category, why it is noise here)
KNOWN_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (re.escape("LightningCLI's args parameter is intended to run from within Python like if it were from the "
               "command line. To prevent mistakes it is not recommended to provide both args and command line "
               "arguments, got: ") + r"sys\.argv\[1:\]=\[.*\], args=\[.*\]\.",
     UserWarning, "emorl demo builds each stage's arguments itself while its own are on the command line"),
    (r"Found \d+ module\(s\) in eval mode at the start of training\. This may lead to unexpected behavior during "
     r"training\. If this is intentional, you can ignore this warning\.",
     UserWarning, "the frozen audio tower stays in eval mode on purpose (emorl.models.checkpoints.enter_train_mode)"),
    (re.escape("`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
               "treespec.is_leaf()` instead."),
     FutureWarning, "lightning 2.6's own _pytree helper on torch 2.13, at every fit; not emorl's code"),
    (re.escape("`past_key_values` is deprecated and will be removed in version 5.40.0 for `") + r"[\w.]+`"
     + re.escape(". Use `cache` instead."),
     FutureWarning, "transformers 5 renaming its own keyword inside generate(); emorl passes neither"),
)

#: (logger name, message matched whole, why it is noise here): INFO records of the libraries
KNOWN_INFO: tuple[tuple[str, str, str], ...] = (
    ("lightning.pytorch.utilities.rank_zero",
     "💡 Tip: For seamless cloud logging and experiment tracking, try installing "
     "[litlogger](https://pypi.org/project/litlogger/) to enable LitLogger, which logs metrics and artifacts "
     "automatically to the Lightning Experiments platform.",
     "an advertisement; emorl logs to TensorBoard"),
)


class _DropExact(logging.Filter):
    """Drops the records whose whole message is one of ``messages``."""

    def __init__(self, messages: set[str]) -> None:
        super().__init__()
        self.messages = messages

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() not in self.messages


def quiet_known_warnings() -> None:
    """Silence exactly the messages of :data:`KNOWN_WARNINGS` and :data:`KNOWN_INFO`; calling it again
    is harmless (``warnings`` keeps one copy of a filter; a logger gets one :class:`_DropExact`), and
    re-installs the filters where a ``warnings.catch_warnings`` block has since dropped them."""
    for pattern, category, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern + r"\Z", category=category)
    by_logger: dict[str, set[str]] = {}
    for name, message, _why in KNOWN_INFO:
        by_logger.setdefault(name, set()).add(message)
    for name, messages in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropExact) for f in logger.filters):
            logger.addFilter(_DropExact(messages))


def quiet_console(verbose: bool = False) -> None:
    """``emorl demo``'s console: :func:`quiet_known_warnings`, and the libraries' INFO lines (device
    lists, weight-loading bars) off; warnings and errors still show. ``verbose``: change nothing."""
    if verbose:
        return
    quiet_known_warnings()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.fabric.utilities.seed", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


class progress_bar:  # noqa: N801 (used like tqdm)
    """A tqdm bar on stderr for a loop of ``total`` steps, showing the last ``loss``."""

    def __init__(self, total: int, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=True, dynamic_ncols=True)

    def update(self, steps: int = 1, loss: float | None = None) -> None:
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()

"""emorl's own log lines on stderr: ``emorl.*`` loggers at INFO (``--log-level``), whatever
Lightning does with its own loggers and the root logger (it left emorl's INFO lines at WARNING,
so the feature cache's "extracting N clips" never showed). :mod:`emorl.cli` and
:mod:`emorl.commands` call :func:`configure_logging`; a library user calls it or not.
"""

from __future__ import annotations

import logging
import sys


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (pytest and the demo's console swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never end a run
            self.handleError(record)


def configure_logging(level: str | None = None) -> None:
    """emorl's loggers (``emorl.*``) on stderr at ``level`` (first call: INFO); other libraries'
    stay as they are (Lightning's root logger at WARNING hid emorl's INFO lines)."""
    logger = logging.getLogger("emorl")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level.upper() if level else "INFO")
    elif level:
        logger.setLevel(level.upper())

"""The one form of emorl's errors for a user's mistake or bad input.

``emorl <command>: error: <what>, <what to do>``, exit status 2, no traceback (set
``EMORL_TRACEBACK=1`` to see it). Everything else (a bug) keeps its traceback.

:class:`EmorlError` is raised for the mistakes emorl itself detects at run time (a corpus whose
every clip fails, a checkpoint of another model, an empty test set); the domain errors that name
their file and field (:class:`~emorl.data.manifest.ManifestError`, label-map and audio errors, a
zoo model that is not on this machine) are shown the same way (:func:`user_error_types`).
"""

from __future__ import annotations

import os
import sys

#: exit status of a user error (argparse's, for a usage mistake)
USER_ERROR_STATUS = 2


class EmorlError(ValueError):
    """A mistake in what the user gave emorl (data, config, checkpoint), said in one line."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types shown as one line: emorl's own, imported here so callers need not."""
    from emorl.audio import AudioError
    from emorl.data.manifest import ManifestError
    from emorl.labels import LabelMapError, UnknownLabelError
    from emorl.zoo import ModelNotAvailableError, ModelNotFoundError

    return (EmorlError, ManifestError, UnknownLabelError, LabelMapError, AudioError, ModelNotFoundError,
            ModelNotAvailableError)


def report(command: str, err: BaseException) -> int:
    """Print ``emorl <command>: error: <err>`` on stderr (the traceback too with ``EMORL_TRACEBACK=1``);
    returns :data:`USER_ERROR_STATUS`."""
    if os.environ.get("EMORL_TRACEBACK") == "1":
        import traceback

        traceback.print_exception(err)
    print(f"emorl {command}: error: {err}", file=sys.stderr)
    return USER_ERROR_STATUS

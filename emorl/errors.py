"""The one form of emorl's errors for a user's mistake or bad input.

``emorl <command>: error: <what>, <what to do>``, exit status 2, no traceback (``--verbose``, or
the environment variable ``EMORL_TRACEBACK=1``, shows it and the error's full text). Everything
else (a bug) keeps its traceback.

:class:`EmorlError` is raised for the mistakes emorl itself detects at run time (a corpus whose
every clip fails, a checkpoint of another model, an empty test set, GPUs asked for where none is
visible); the domain errors that name their file and field (:class:`~emorl.data.manifest.ManifestError`,
label-map and audio errors, a zoo model that is not on this machine) are shown the same way
(:func:`user_error_types`). An error raised while jsonargparse builds a class arrives wrapped in
its ``ValueError``; :func:`find_user_error` finds the original in the exception's chain.
"""

from __future__ import annotations

import os
import sys

#: exit status of a user error (argparse's, for a usage mistake)
USER_ERROR_STATUS = 2

#: the environment variable that shows tracebacks and full texts (``--verbose`` sets it)
TRACEBACK_VARIABLE = "EMORL_TRACEBACK"


class EmorlError(ValueError):
    """A mistake in what the user gave emorl (data, config, checkpoint), said in one line."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exception types shown as one line: emorl's own, imported here so callers need not."""
    from emorl.audio import AudioError
    from emorl.data.folder import PredictInputError
    from emorl.data.manifest import ManifestError
    from emorl.labels import LabelMapError, UnknownLabelError
    from emorl.zoo import ModelNotAvailableError, ModelNotFoundError

    return (EmorlError, ManifestError, UnknownLabelError, LabelMapError, AudioError, ModelNotFoundError,
            ModelNotAvailableError, PredictInputError)


def find_user_error(err: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """``err`` or the first exception of its ``__cause__`` / ``__context__`` chain of one of ``types``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, types):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def verbose() -> bool:
    """Whether tracebacks and full error texts are wanted (``--verbose`` / ``EMORL_TRACEBACK=1``)."""
    return os.environ.get(TRACEBACK_VARIABLE) == "1"


def one_line(err: BaseException) -> str:
    """The error's one line: its ``one_line`` attribute when it has one (a short form of a long
    message, e.g. a zoo model that is not here), else its text with its lines joined."""
    short = getattr(err, "one_line", None)
    if short:
        return short
    return " ".join(line.strip() for line in str(err).splitlines() if line.strip())


def report(command: str, err: BaseException) -> int:
    """Print ``emorl <command>: error: <err>`` on stderr (the traceback and full text with
    ``--verbose`` / ``EMORL_TRACEBACK=1``); returns :data:`USER_ERROR_STATUS`."""
    if verbose():
        import traceback

        traceback.print_exception(err)
        print(f"emorl {command}: error: {err}", file=sys.stderr)
    else:
        print(f"emorl {command}: error: {one_line(err)}", file=sys.stderr)
    return USER_ERROR_STATUS

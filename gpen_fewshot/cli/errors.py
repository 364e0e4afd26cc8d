"""The one user-error funnel of the command lines: one ``error:`` line on stderr and an exit status.

A user's mistake (a missing photo folder, a bad checkpoint, an unsafe person name) is reported as one line
that names the culprit, never as a traceback; the library raises typed exceptions and only the
command-line edges (``gpen_fewshot/cli/``) turn them into this line. ``HYDRA_FULL_ERROR=1`` (Hydra's own
switch) lets the exception through for debugging.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

FULL_ERROR_ENV = "HYDRA_FULL_ERROR"


def user_error(message: object, code: int = 1, blank_line: bool = False) -> int:
    """Print ``error: <message>`` (its first line) to stderr; returns ``code`` (for ``main() -> int``).

    Args:
        message: the error (or text); only its first line is shown.
        code: the exit status the command ends with.
        blank_line: start with an empty line (after a progress bar or the training log).
    """
    text = str(message).strip()
    first = text.splitlines()[0] if text else type(message).__name__
    print(f"{chr(10) if blank_line else ''}error: {first}", file=sys.stderr)
    return code


def exit_with_error(message: object, code: int = 1, blank_line: bool = False) -> NoReturn:
    """:func:`user_error`, then exit with ``code`` (where no ``main`` returns a status: Hydra tasks)."""
    raise SystemExit(user_error(message, code, blank_line))


def full_error_wanted() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``)."""
    return os.environ.get(FULL_ERROR_ENV) == "1"


@contextmanager
def user_errors_exit(errors: tuple[type[BaseException], ...], code: int = 1,
                     blank_line: bool = False) -> Iterator[None]:
    """Turn the listed exception types raised inside the block into :func:`exit_with_error`."""
    try:
        yield
    except errors as error:
        if full_error_wanted():
            raise
        exit_with_error(error, code, blank_line)

"""The command-line entry points' one rule for errors: a user's mistake is one line.

A wrong path, run, store URL or labels file ends the command with ``<prog>: error:
<what is wrong>`` on stderr and exit status 2, as argparse does for a bad option. A
bug still gives its traceback, and so does any error with ``MELANOMA_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from melanoma.store import ArtifactCorruptError, ArtifactIncompleteError

# What a user's input can cause: bad values and formats (ValueError, which the labels,
# layout and store errors are), missing runs (LookupError), missing or unreadable files
# and unreachable stores (OSError, which StoreUnavailableError is), and runs whose
# artifacts are incomplete or changed.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    LookupError,
    OSError,
    ArtifactIncompleteError,
    ArtifactCorruptError,
)


def run_command(prog: str, command: Callable[[], int]) -> int:
    """``command()``'s exit status; a user error is printed as one line, with status 2."""
    try:
        return command()
    except USER_ERRORS as error:
        if os.environ.get("MELANOMA_DEBUG"):
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2

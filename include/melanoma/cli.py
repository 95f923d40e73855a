"""What the command-line entry points share: one-line errors, a quiet TensorFlow, a progress bar.

A user's mistake is one line: a wrong path, run, store URL or labels file ends the command
with ``<prog>: error: <what is wrong>`` on stderr and exit status 2, as argparse does for a
bad option. A bug still gives its traceback, and so does any error with
``MELANOMA_DEBUG=1``, which also lets TensorFlow log as it would by default.

Standard library only (and the store's exception classes): a command imports this before
it has decided whether it needs TensorFlow at all.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

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


def debugging() -> bool:
    """``MELANOMA_DEBUG`` is set (and not ``0``): tracebacks and TensorFlow's own logging."""
    return os.environ.get("MELANOMA_DEBUG", "") not in ("", "0")


def run_command(prog: str, command: Callable[[], int | None]) -> int:
    """``command()``'s exit status (None: 0); a user error is printed as one line, with
    status 2."""
    try:
        return command() or 0
    except USER_ERRORS as error:
        if debugging():
            raise
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2


@contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Import TensorFlow (and Keras) inside this block to keep their logging off stderr.

    TensorFlow's C++ side logs below ERROR only with ``TF_CPP_MIN_LOG_LEVEL`` unset, and
    its Python side (absl, the ``tensorflow`` logger, Keras warnings) from ERROR up. Some
    C++ lines (oneDNN, CPU features) are written while the library loads, before it reads
    that variable: those are caught by pointing file descriptor 2 at a temporary file for
    the block, and shown after all if the block fails. With ``MELANOMA_DEBUG`` nothing is
    hidden. Already imported, TensorFlow is not re-imported, and this changes little.
    """
    if debugging():
        yield
        return
    # Before the import, which reads them; a value the user set wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # 2: ERROR and above only
    for name in ("tensorflow", "absl", "keras", "h5py"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for module in ("tensorflow", "keras", "absl", "google.protobuf"):
        warnings.filterwarnings("ignore", module=rf"{module}(\.|$)")
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (a daemon): nothing to catch
        yield
        return
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore_stderr(saved)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        _restore_stderr(saved)


def _restore_stderr(saved: int) -> None:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)


class ProgressBar:
    """``label [#####-----] done/total`` on one line of stderr, redrawn with a carriage return.

    Drawn only when the work takes more than one batch and stderr is a terminal (a log
    file or a pipe gets no carriage returns); erased when done, since the summary that
    follows gives the count. Use as a context manager, so that an error's message starts
    on a clean line.
    """

    def __init__(
        self,
        label: str,
        total: int,
        batch_size: int,
        stream: TextIO | None = None,
        width: int = 30,
    ) -> None:
        self.label, self.total, self.width = label, total, width
        self.stream = sys.stderr if stream is None else stream
        self.enabled = total > batch_size and self.stream.isatty()
        self._drawn = 0  # characters on the line now

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        filled = self.width * min(done, self.total) // self.total
        line = f"{self.label} [{'#' * filled}{'-' * (self.width - filled)}] {done}/{self.total}"
        self.stream.write("\r" + line.ljust(self._drawn))
        self.stream.flush()
        self._drawn = len(line)

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r" + " " * self._drawn + "\r")
            self.stream.flush()
            self._drawn = 0

    def __enter__(self) -> ProgressBar:
        self.update(0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Output: one line per decision on stdout, errors on stderr.

Colour only when the stream is a terminal and NO_COLOR is unset.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TextIO

ERRORS, NORMAL, VERBOSE, DEBUG = 0, 1, 2, 3

_RED, _YELLOW, _GREEN, _DIM, _RESET = "\033[31m", "\033[33m", "\033[32m", "\033[2m", "\033[0m"


def _use_colour(stream: TextIO) -> bool:
    if "NO_COLOR" in os.environ:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Log:
    def __init__(self, verbosity: int = NORMAL, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.verbosity = verbosity
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        # Resolutions log from worker threads; keep their lines whole.
        self._lock = threading.Lock()

    def _write(self, stream: TextIO, colour: str, text: str) -> None:
        if colour and _use_colour(stream):
            text = f"{colour}{text}{_RESET}"
        with self._lock:
            stream.write(text + "\n")
            stream.flush()

    def error(self, text: str) -> None:
        self._write(self.err, _RED, f"cipug: error: {text}")

    def warning(self, text: str) -> None:
        if self.verbosity >= NORMAL:
            self._write(self.err, _YELLOW, f"cipug: warning: {text}")

    def info(self, text: str) -> None:
        if self.verbosity >= NORMAL:
            self._write(self.out, "", text)

    def success(self, text: str) -> None:
        if self.verbosity >= NORMAL:
            self._write(self.out, _GREEN, text)

    def verbose(self, text: str) -> None:
        if self.verbosity >= VERBOSE:
            self._write(self.out, _DIM, text)

    def debug(self, text: str) -> None:
        if self.verbosity >= DEBUG:
            self._write(self.out, _DIM, text)

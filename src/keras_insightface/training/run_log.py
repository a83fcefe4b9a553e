"""The run's log, ``<prefix>_train.log``: every line the console shows while the run trains, as plain text.

The console is copied as written (stdout and stderr), and the copy keeps finished lines only: a line a progress bar
redraws (carriage returns, backspaces) is written once, in its final form, and terminal colour codes are left out,
so the log reads like the console did and greps cleanly.

Example:
    >>> import io
    >>> sink = io.StringIO()
    >>> lines = LogLines(sink)
    >>> lines.write("1/3 \\x1b[32m━\\x1b[0m\\r2/3 ━━")
    >>> lines.write("\\b\\b\\b\\b\\b\\r3/3 ━━━ - loss: 1.0\\nnext")
    >>> sink.getvalue()
    '3/3 ━━━ - loss: 1.0\\n'
"""

import contextlib
import io
import os
import re
import sys

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CONTROLS = re.compile(r"(\r|\x08|\n)")


class LogLines:
    """Writes the finished lines of a console stream to ``file``: text after the last ``\\r`` / backspace of a line
    (what the terminal shows), without escape codes."""

    def __init__(self, file):
        self.file, self.line = file, ""

    def write(self, text):
        for piece in CONTROLS.split(text):
            if piece == "\n":
                self.file.write(ESCAPES.sub("", self.line) + "\n")
                self.file.flush()
                self.line = ""
            elif piece in ("\r", "\x08"):
                self.line = ""  # the line is being redrawn: keep only what comes after
            else:
                self.line += piece


class Tee:
    """A console stream that also feeds ``LogLines``; a terminal stays a terminal (``isatty``), so progress shows
    as it would without the log."""

    def __init__(self, stream, lines, log):
        self.stream, self.lines, self.log = stream, lines, log

    def write(self, text):
        self.lines.write(text)
        return self.stream.write(text)

    def flush(self):
        self.stream.flush()

    def isatty(self):
        return bool(getattr(self.stream, "isatty", None)) and self.stream.isatty()

    def __getattr__(self, name):
        return getattr(self.stream, name)


class RunLog:
    """The log file of a run, written from ``start()`` on: lines before it are kept in memory and written then, so
    a run that fails before it claims its folder leaves no log behind."""

    def __init__(self, path):
        self.path, self.buffer, self.file, self.closed = os.path.abspath(path), io.StringIO(), None, False

    def write(self, text):
        if self.closed:  # a stream kept past the run (a logging handler made during it): the console only
            return
        (self.file or self.buffer).write(text)

    def flush(self):
        if self.file is not None and not self.closed:
            self.file.flush()

    def start(self):
        if self.file is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")
            self.file.write(self.buffer.getvalue())
            self.file.flush()

    def close(self):
        self.closed = True
        if self.file is not None:
            self.file.close()


@contextlib.contextmanager
def tee_console(path, start=True):
    """Copy stdout and stderr to the end of the log ``path`` while inside (a resumed or repeated run adds to it);
    yields the ``RunLog``, written from its ``start()`` (at once with ``start=True``). Nothing new when the
    console is already copied there (a run inside a command that logs)."""
    if isinstance(sys.stdout, Tee) and sys.stdout.log.path == os.path.abspath(path):
        yield sys.stdout.log
        return
    log = RunLog(path)
    if start:
        log.start()
    saved = sys.stdout, sys.stderr
    sys.stdout = Tee(saved[0], LogLines(log), log)
    sys.stderr = Tee(saved[1], LogLines(log), log)
    try:
        yield log
    finally:
        sys.stdout, sys.stderr = saved
        log.close()

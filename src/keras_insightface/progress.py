"""A dependency-free progress line for long data conversions (indexing, packing, unpacking).

It redraws one carriage-return line on stderr at most five times a second, so even millions of
``update`` calls cost little and logs stay short.

Example:
    >>> import io
    >>> out = io.StringIO()
    >>> with Progress(4, "demo", stream=out) as bar:
    ...     bar.update(3)
    ...     bar.update(1)
    >>> out.getvalue().split("\\r")[-1]
    'demo: 4/4 (100%)\\n'
"""

import sys
import time


class Progress:
    """Count work done out of ``total`` (None or 0 when unknown) and show it as ``desc: done/total (pct%)``.

    The first line appears after ``interval`` seconds, so quick jobs print only the final count.
    """

    def __init__(self, total, desc, stream=None, interval=0.2):
        self.total = int(total) if total else 0
        self.desc = desc
        self.count = 0
        self.interval = interval
        self._stream = stream
        self._last_draw = time.monotonic()
        self._closed = False

    def _draw(self, end=""):
        if self.total:
            line = f"{self.desc}: {self.count}/{self.total} ({100 * self.count // self.total}%)"
        else:
            line = f"{self.desc}: {self.count}"
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write(f"\r{line}{end}")
        stream.flush()
        self._last_draw = time.monotonic()

    def update(self, n=1):
        """Add ``n`` to the count; redraw when the last redraw is older than ``interval`` seconds."""
        self.count += n
        if time.monotonic() - self._last_draw >= self.interval:
            self._draw()

    def close(self):
        """Draw the final count and end the line (once; later calls do nothing)."""
        if not self._closed:
            self._closed = True
            self._draw("\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

"""One progress style for every command: Keras's ``Progbar`` on a terminal (what ``fit`` shows), plain lines in a
log or a pipe (no escape codes or carriage returns: a line every ``every_s`` seconds and one at the end).

Long data jobs (indexing, packing, unpacking, reading packs) use ``progress_bar``; embedding and training use
``make_progbar`` (training through ``training.callbacks.RunProgress``).

Example:
    >>> with progress_bar(4, "demo", every_s=0) as advance:  # doctest: +ELLIPSIS
    ...     advance(3)
    ...     advance(1)
    demo: 3/4 (75%) - 0:00 elapsed, eta 0:00 - ...
    demo: 4/4 (100%) - 0:00 elapsed - ...
"""

import contextlib
import sys
import time

import keras


def is_terminal(stream=None):
    """Whether ``stream`` (default: the current ``sys.stdout``) is a terminal that can redraw a line."""
    stream = sys.stdout if stream is None else stream
    return bool(getattr(stream, "isatty", None)) and stream.isatty()


def _duration(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class PlainProgbar(keras.utils.Progbar):
    """Keras's ``Progbar`` for logs: the same running averages, printed as one plain line at most every
    ``every_s`` seconds and at the end: ``desc: 120/500 (24%) - 0:31 elapsed, eta 1:38 - 259ms/step - loss: 9.1``."""

    def __init__(self, target, every_s=30.0, desc="", unit_name="step", **kwargs):
        super().__init__(target, verbose=0, unit_name=unit_name, **kwargs)  # Keras averages, we print
        self.every_s, self.desc, self._printed = every_s, desc, None

    def update(self, current, values=None, finalize=None):
        super().update(current, values, finalize)
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        now = time.time()
        if not finalize and (self.target and current >= self.target  # the final line comes with finalize
                             or self._printed is not None and now - self._printed < self.every_s):
            return
        if finalize and self._printed == ("end", current):
            return
        self._printed = ("end", current) if finalize else now
        print(self.line(current, now, finalize), flush=True)

    def line(self, current, now, finalize=False):
        """The plain progress line at ``current`` units."""
        elapsed = now - self._start
        parts = [f"{self.desc}: " if self.desc else ""]
        if self.target:
            parts.append(f"{current}/{self.target} ({100 * current // self.target}%)")
        else:
            parts.append(f"{current}")
        timing = f"{_duration(elapsed)} elapsed"
        if self.target and not finalize and current:
            timing += f", eta {_duration(elapsed / current * (self.target - current))}"
        parts.append(f" - {timing}")
        if current:
            per_unit = elapsed / current
            parts.append(f" -{self._format_time(per_unit, self.unit_name)}")
        for key in self._values_order:
            value = self._values[key]
            if isinstance(value, list):
                value = float(value[0]) / max(1, value[1])
                value = (f"{value:.0f}" if value == 0 or key in (self.stateful_metrics or ()) and value.is_integer()
                         else f"{value:.4f}" if abs(value) > 1e-3 else f"{value:.4e}")
            parts.append(f" - {key}: {value}")
        return "".join(parts)


def make_progbar(target, unit_name="step", desc="", every_s=30.0, stateful_metrics=None):
    """Keras's ``Progbar`` on a terminal, a ``PlainProgbar`` (``desc``, a line every ``every_s`` s) elsewhere;
    ``stateful_metrics`` are shown as given, not averaged (e.g. a rate)."""
    if is_terminal():
        if desc:
            print(desc, flush=True)
        return keras.utils.Progbar(target, unit_name=unit_name, stateful_metrics=stateful_metrics)
    return PlainProgbar(target, every_s=every_s, desc=desc, unit_name=unit_name, stateful_metrics=stateful_metrics)


@contextlib.contextmanager
def progress_bar(total, desc, unit="item", every_s=30.0):
    """A progress display of ``total`` units (None or 0 when unknown) named ``desc``; yields ``advance(n=1)``."""
    total = int(total) if total else None
    bar, done = make_progbar(total, unit_name=unit, desc=desc, every_s=every_s), [0]

    def advance(n=1):
        done[0] += n
        bar.update(done[0], finalize=False)

    yield advance
    bar.update(done[0], finalize=True)

"""Decode workers that start from a script without an ``if __name__ == "__main__":`` guard.

grain starts its decode workers with ``spawn``, and a spawned process first runs the parent's main script again
(as ``__mp_main__``): an unguarded training script, as the seed's users write them, would build and train a model
in every worker and fail with "Worker process was terminated unexpectedly". The workers need nothing from that
script (the pipeline holds this package's objects only), so while they start the script's path is hidden from
``multiprocessing``: ``spawn`` then imports nothing in them.

Example:
    >>> import sys
    >>> with main_script_hidden():
    ...     getattr(sys.modules["__main__"], "__spec__", None) is None
    True
"""

import contextlib
import sys

_MISSING = object()


@contextlib.contextmanager
def main_script_hidden():
    """``__main__.__file__`` and ``__spec__`` removed inside (what ``spawn`` reads to run the script again)."""
    main = sys.modules.get("__main__")
    saved = {name: getattr(main, name, _MISSING) for name in ("__file__", "__spec__")} if main else {}
    try:
        if main is not None:
            main.__spec__ = None
            if saved["__file__"] is not _MISSING:
                del main.__file__
        yield
    finally:
        for name, value in saved.items():
            if value is _MISSING:
                main.__dict__.pop(name, None)
            else:
                setattr(main, name, value)


class SpawnSafeDataset:
    """A grain dataset whose iterators start (and restart, after ``set_state``) their worker processes with the
    main script hidden; iterators keep grain's ``get_state`` / ``set_state`` / ``close``."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        with main_script_hidden():
            return SpawnSafeIterator(iter(self.dataset))


class SpawnSafeIterator:
    """grain's iterator; the calls that start workers (the first ``next`` after creation or ``set_state``) run
    with the main script hidden, the others untouched."""

    def __init__(self, iterator):
        self.iterator, self.starting = iterator, True

    def __iter__(self):
        return self

    def __next__(self):
        if not self.starting:
            return next(self.iterator)
        with main_script_hidden():
            item = next(self.iterator)
        self.starting = False
        return item

    def get_state(self):
        return self.iterator.get_state()

    def set_state(self, state):
        with main_script_hidden():
            self.iterator.set_state(state)
        self.starting = True

    def close(self):
        if hasattr(self.iterator, "close"):
            self.iterator.close()

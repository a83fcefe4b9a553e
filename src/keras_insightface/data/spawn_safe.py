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

import concurrent.futures
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
        self.iterator, self.starting, self.early = iterator, True, None

    def __iter__(self):
        return self

    def _first(self):
        with main_script_hidden():
            return next(self.iterator)

    def __next__(self):
        if self.early is not None:  # the first item, fetched by start_prefetch
            early, self.early = self.early, None
            item = early.result()
        elif not self.starting:
            return next(self.iterator)
        else:
            item = self._first()
        self.starting = False
        return item

    def _drop_early(self):
        """Wait for a first item fetched ahead and forget it (the position is about to be set or closed)."""
        early, self.early = self.early, None
        if early is not None:
            try:
                early.result()
            except Exception:  # noqa: BLE001 - an item nobody will read: its error is not this call's
                pass

    def start_prefetch(self):
        """Fetch the first item in a background thread now: the workers' start-up (a fresh interpreter importing
        the decoder, seconds) then overlaps whatever the caller does next (building and tracing the model), and
        the next ``next`` returns that item (the iterator's state is the same as if it had been read there)."""
        if self.starting and self.early is None:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="first-batch")
            self.early = pool.submit(self._first)
            pool.shutdown(wait=False)

    def get_state(self):
        return self.iterator.get_state()

    def set_state(self, state):
        self._drop_early()
        with main_script_hidden():
            self.iterator.set_state(state)
        self.starting = True

    def close(self):
        self._drop_early()
        if hasattr(self.iterator, "close"):
            self.iterator.close()

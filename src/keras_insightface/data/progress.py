"""Progress of long data jobs (indexing, packing, unpacking, reading packs) through ``rich``'s progress bar.

A live bar on a terminal; in a log (not a terminal) only the final line, so logs stay short. ``rich`` comes with
Keras; training progress is Keras's own ``Progbar``.

Example:
    >>> with progress_bar(4, "demo") as advance:
    ...     advance(3)
    ...     advance(1)
"""

import contextlib


@contextlib.contextmanager
def progress_bar(total, desc):
    """A bar of ``total`` units (None or 0 when unknown) named ``desc`` on stderr; yields ``advance(n=1)``."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True)) as progress:
        task = progress.add_task(desc, total=int(total) if total else None)
        yield lambda n=1: progress.advance(task, n)

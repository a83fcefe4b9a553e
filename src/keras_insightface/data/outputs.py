"""Outputs of the data tools (packs, datasets, converted models): an existing one is replaced only when asked.

Example:
    >>> refuse_existing(getfixture("tmp_path") / "new.bin", overwrite=False)
    >>> refuse_existing(__file__, overwrite=False)
    Traceback (most recent call last):
    ...
    keras_insightface.errors.DataError: ...outputs.py: already exists, not overwritten (--overwrite, or ...
"""

import os

from keras_insightface.errors import DataError


def refuse_existing(path, overwrite):
    """Raise a ``DataError`` naming ``path`` and the flag that replaces it, when ``path`` exists and not
    ``overwrite``."""
    if not overwrite and os.path.lexists(path):
        raise DataError(f"{path}: already exists, not overwritten (--overwrite, or overwrite=True, replaces it)")

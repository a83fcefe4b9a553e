"""Write the seed's npz dataset lists (read back by ``data.sources.open_source``): the fields naming the records of
a source, and an atomic ``.npz`` writer. ``distill-data`` and ``drop-topk`` write their outputs with them.

Example:
    >>> import numpy as np
    >>> out = getfixture("tmp_path") / "list.npz"
    >>> save_npz(out, image_names=np.asarray(["a/1.jpg"]), image_classes=np.asarray([0]))
    >>> sorted(np.load(out))
    ['image_classes', 'image_names', 'signature']
"""

import os
from pathlib import Path

import numpy as np

from keras_insightface.atomic import atomic_path
from keras_insightface.data.signing import sign, signed
from keras_insightface.errors import DataError


def npz_list_fields(source, indices, out_dir):
    """The npz keys naming records ``indices`` of ``source``: ``image_names`` relative to ``out_dir``, or
    ``rec_path`` (relative to ``out_dir``) and, unless all records are taken in order, ``image_indices``."""
    indices = np.asarray(indices, dtype=np.int64)
    inner = getattr(source, "source", None)
    if inner is not None and hasattr(source, "indices"):
        return npz_list_fields(inner, np.asarray(source.indices)[indices], out_dir)
    if hasattr(source, "rec_path"):
        fields = {"rec_path": np.asarray(os.path.relpath(source.rec_path, out_dir))}
        if not np.array_equal(indices, np.arange(len(source))):
            fields["image_indices"] = indices
        return fields
    if hasattr(source, "paths"):
        return {"image_names": np.asarray([os.path.relpath(source.paths[i], out_dir) for i in indices.tolist()])}
    name = getattr(source, "name", source)
    raise DataError(f"{name}: cannot name its records in an npz list (it has neither paths nor a rec_path)")


def _path_entries(arrays):
    """The path text of an npz list (its ``image_names`` or ``rec_path``), what its signature covers."""
    if "image_names" in arrays:
        return "\0".join(np.asarray(arrays["image_names"]).astype(str).tolist())
    return str(arrays["rec_path"]) if "rec_path" in arrays else None


def signed_by_user(arrays):
    """Whether an npz list's paths were written by this user's ``save_npz`` (``signing``): such a list may name
    images outside its folder (``distill-data`` beside, not above, the dataset) without ``allow_outside``."""
    entries = _path_entries(arrays)
    return entries is not None and "signature" in arrays and signed(str(arrays["signature"]), entries)


def save_npz(out_path, **arrays):
    """Write ``arrays`` to ``out_path`` (must end in ``.npz``) through a temporary file and a rename; an npz list's
    paths are signed with this user's key."""
    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        raise DataError(f"{out_path}: output must be an .npz file")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    entries = _path_entries(arrays)
    if entries is not None:
        arrays["signature"] = np.asarray(sign(entries))
    with atomic_path(out_path) as tmp:
        np.savez(tmp, **arrays)

"""Verification packs (``lfw.bin``, ``cfp_fp.bin``, ...): a pickle of ``(bins, issame_list)``.

``bins`` holds 2*P encoded JPEG images (bytes, or uint8 numpy arrays of the bytes); pair ``i`` is images
``2i`` and ``2i + 1`` and ``issame_list[i]`` says whether they show the same person. Packs come from the
internet, so they are read with an unpickler that only builds lists, tuples, bytes, bools and numpy arrays.
"""

import importlib
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import simplejpeg

from keras_insightface.errors import DataError

_NUMPY_TOP = frozenset({"ndarray", "dtype"})
_MULTIARRAY_MODULES = frozenset({"numpy.core.multiarray", "numpy._core.multiarray"})
_MULTIARRAY_NAMES = frozenset({"_reconstruct", "scalar"})


def _multiarray():
    """numpy's multiarray module, under its numpy 2 name when present (no deprecated ``numpy.core`` import)."""
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed on str with latin1, got {encoding!r}")
    return text.encode("latin1", errors)


class _PackUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a pickled numpy array needs."""

    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module, name):
        if module == "numpy" and name in _NUMPY_TOP:
            return getattr(np, name)
        if module in _MULTIARRAY_MODULES and name in _MULTIARRAY_NAMES:
            return getattr(_multiarray(), name)
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise DataError(
            f"{self._path}: refusing to unpickle {module}.{name}: "
            "a .bin pack may only hold lists, tuples, bytes, bools and numpy arrays"
        )


def _is_bool_like(value):
    return isinstance(value, (bool, np.bool_)) or (
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (0, 1)
    )


def _validate(path, bins, issame):
    """Check the pack structure; return (list of bytes, bool array)."""
    if isinstance(issame, np.ndarray):
        issame = issame.tolist()
    if not isinstance(bins, (list, tuple)):
        raise DataError(f"{path}: images must be a list or tuple, got {type(bins).__name__}")
    if not isinstance(issame, (list, tuple)):
        raise DataError(f"{path}: issame_list must be a list or tuple, got {type(issame).__name__}")
    images = []
    for i, entry in enumerate(bins):
        if isinstance(entry, (bytes, bytearray)):
            images.append(bytes(entry))
        elif isinstance(entry, np.ndarray) and entry.dtype == np.uint8:
            images.append(entry.tobytes())
        else:
            kind = f"numpy {entry.dtype} array" if isinstance(entry, np.ndarray) else type(entry).__name__
            raise DataError(f"{path}: image entry {i} is {kind}, expected bytes or a uint8 numpy array")
    for i, value in enumerate(issame):
        if not _is_bool_like(value):
            raise DataError(f"{path}: issame entry {i} is {type(value).__name__}, expected a bool")
    if len(images) != 2 * len(issame):
        raise DataError(f"{path}: {len(images)} images for {len(issame)} pairs, expected {2 * len(issame)}")
    return images, np.array([bool(v) for v in issame], dtype=bool)


def load_bin(path):
    """Load a verification pack safely: returns (list of JPEG bytes, bool array of pair labels)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _PackUnpickler(f, path).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a .bin pack") from None
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        kind = type(data).__name__
        if isinstance(data, (list, tuple)):
            kind += f" of length {len(data)}"
        raise DataError(f"{path}: expected a 2-element (bins, issame_list) tuple, got {kind}")
    return _validate(path, data[0], data[1])


def write_bin(path, images, issame):
    """Write a pack (protocol 4, bytes entries, python bools) atomically: temp file, then rename."""
    path = Path(path)
    images, issame = _validate(path, list(images), list(issame))
    payload = (images, [bool(v) for v in issame])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(payload, f, protocol=4)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def decode_bin_images(images, path=""):
    """Decode pack images to one uint8 RGB array (N, H, W, 3); all images must share one size."""
    where = f"{path}: " if path else ""
    out = None
    for i, data in enumerate(images):
        try:
            image = simplejpeg.decode_jpeg(bytes(data), colorspace="RGB")
        except Exception as error:
            raise DataError(f"{where}image {i} is not a decodable JPEG ({error})") from None
        if out is None:
            out = np.empty((len(images),) + image.shape, dtype=np.uint8)
        elif image.shape != out.shape[1:]:
            raise DataError(f"{where}image {i} has shape {image.shape}, expected {out.shape[1:]} like image 0")
        out[i] = image
    if out is None:
        return np.empty((0, 0, 0, 3), dtype=np.uint8)
    return out

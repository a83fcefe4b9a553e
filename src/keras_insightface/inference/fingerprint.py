"""Fingerprints that change when a model or file changes: the keys of embedding caches (``search``'s gallery).

Example:
    >>> path = getfixture("tmp_path") / "m.onnx"
    >>> _ = path.write_bytes(b"graph")
    >>> model_fingerprint(path).startswith("file:") and model_fingerprint(lambda batch: batch) is None
    True
"""

import hashlib
import os

import numpy as np


def file_fingerprint(path):
    """``absolute path|size|mtime_ns`` of a file: changes when the file is replaced or rewritten."""
    stat = os.stat(path)
    return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def model_fingerprint(model):
    """A text that changes with the model: a model file's ``file_fingerprint``; for a Keras model in memory (or
    an embedder holding one) a SHA-256 of its architecture (``to_json``) and every weight; for an embedder opened
    from a file that file's fingerprint. ``None`` when none of these applies."""
    if isinstance(model, (str, os.PathLike)):
        return "file:" + file_fingerprint(model)
    path = getattr(model, "path", None)
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
        return "file:" + file_fingerprint(path)
    model = getattr(model, "model", model)  # a KerasEmbedder's model
    if hasattr(model, "weights") and hasattr(model, "to_json"):
        try:
            architecture = model.to_json()
        except (TypeError, ValueError, NotImplementedError):  # a subclassed model without a config
            architecture = type(model).__name__ + "".join(f"|{layer.name}" for layer in model.layers)
        digest = hashlib.sha256(architecture.encode())
        for weight in model.weights:
            value = np.ascontiguousarray(np.asarray(weight))
            digest.update(f"{weight.path}{value.shape}{value.dtype}".encode())
            digest.update(value.tobytes())
        return "keras:" + digest.hexdigest()
    return None

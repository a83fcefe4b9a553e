"""1:1 face comparison: the cosine similarity of two aligned faces, and the threshold that decides "same person".

``compare(model, image_a, image_b, threshold)`` embeds both faces as verification does (the embedding of the
face plus that of its mirror image, L2-normalised) and returns their cosine similarity; with a threshold the
pair is the same person when ``similarity > threshold``.

``model`` is a Keras basic model, a model file (``.keras`` / ``.h5`` / ``.onnx`` / ``.pt``, opened by
``open_model``) or any callable ``uint8 NHWC RGB batch -> (B, D)``. Images are file paths (JPEG, PNG) or uint8
``(H, W, 3)`` RGB arrays and must be aligned face crops of the model's input size (``keras-insightface
align`` makes them); a ``prepare`` callable ``image -> aligned crop`` (e.g. a face detector with
``norm_crop``) is applied first when given.

``resolve_threshold(spec, model, set_name)`` turns a threshold spec into ``(value, where it came from)``:
    - a number (``0.3`` or ``"0.3"``): a cosine threshold in [-1, 1];
    - a ``.bin`` verification pack: the model is evaluated on it (``evaluate_bin``) and the best-accuracy
      threshold is taken;
    - a training history JSON (``<name>_hist.json`` of ``Train``): the ``<set>_thresh`` of the epoch with
      the best ``<set>`` accuracy (``set_name``, default the first verification set of the file).

Example:
    >>> import numpy as np
    >>> model = lambda images: np.asarray(images, "float32").mean(axis=(1, 2)) - 127.5   # (B, 3) "embeddings"
    >>> red, dark_red = np.full((112, 112, 3), [250, 0, 0], "uint8"), np.full((112, 112, 3), [200, 0, 0], "uint8")
    >>> result = compare(model, red, dark_red, threshold=0.5)   # cosine of (122.5, -127.5, -127.5), (72.5, ...)
    >>> round(result["similarity"], 4), result["same"], result["threshold_source"]
    (0.9771, True, 'given number 0.5')
"""

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from keras_insightface.errors import DataError

DEFAULT_INPUT_SIZE = (112, 112)
KERAS_SUFFIXES = (".keras", ".h5")


def open_model(model):
    """A model file opened for embedding (``.keras`` / ``.h5``: a Keras model; ``.onnx`` / ``.pt`` /
    ``.pth``: ``load_teacher``'s callable); a model object or callable is returned as is."""
    if not isinstance(model, (str, os.PathLike)):
        if not callable(getattr(model, "predict_on_batch", model)):
            raise DataError(
                f"model: expected a model file, a Keras model or a callable, received {type(model).__name__}"
            )
        return model
    if Path(model).suffix.lower() in KERAS_SUFFIXES:
        from keras_insightface.saving import load_model

        return load_model(model)
    from keras_insightface.data.distill import load_teacher

    return load_teacher(os.fspath(model))


def file_fingerprint(path):
    """``absolute path|size|mtime_ns`` of a file: changes when the file is replaced or rewritten."""
    stat = os.stat(path)
    return f"{os.path.abspath(path)}|{stat.st_size}|{stat.st_mtime_ns}"


def model_fingerprint(model):
    """A text that changes with the model: a model file's ``file_fingerprint``; for a Keras model in memory a
    SHA-256 of its architecture (``to_json``) and every weight; for a callable with a ``path`` attribute (the
    ONNX wrapper of ``load_teacher``) that file's fingerprint. ``None`` when none of these applies."""
    if isinstance(model, (str, os.PathLike)):
        return "file:" + file_fingerprint(model)
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
    path = getattr(model, "path", None)
    if isinstance(path, (str, os.PathLike)) and os.path.isfile(path):
        return "file:" + file_fingerprint(path)
    return None


def model_input_size(model):
    """``(height, width)`` the model takes: from a Keras model's input shape or an ONNX wrapper's ``size``;
    ``DEFAULT_INPUT_SIZE`` (the ArcFace crop) for callables that do not say, or dynamic sizes."""
    shape = getattr(model, "input_shape", None)
    size = tuple(shape[1:3]) if shape is not None and len(shape) == 4 else tuple(getattr(model, "size", ()) or ())
    if len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size):
        return size
    return DEFAULT_INPUT_SIZE


def read_image(image, where=None):
    """A file path (JPEG / PNG) or uint8 ``(H, W, 3)`` array -> uint8 RGB array; ``where`` names it in errors."""
    if isinstance(image, (str, os.PathLike)):
        from keras_insightface.evaluation.align import _read_image

        path = Path(image)
        try:
            return _read_image(path)
        except OSError as error:
            raise DataError(f"{path}: cannot read the image ({error.strerror or error})") from None
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise DataError(
            f"{where or 'image'}: expected a file path or a uint8 (H, W, 3) RGB array, received {array.dtype}"
            f" {array.shape}"
        )
    return array


def load_face(image, size, prepare=None, where=None):
    """The aligned ``size = (height, width)`` face crop of ``image`` (path or array), ``prepare``-d when given.

    Without ``prepare`` an image of another size is an error: it is not an aligned crop for this model.
    """
    where = str(image) if isinstance(image, (str, os.PathLike)) else where or "image"
    face = read_image(image, where)
    if prepare is not None:
        try:
            face = prepare(face)
        except DataError as error:
            raise DataError(error if str(error).startswith(where) else f"{where}: {error}") from None
        face = np.asarray(face)
        if face.dtype != np.uint8 or face.shape != (*size, 3):
            raise DataError(
                f"{where}: prepare returned a {face.dtype} {face.shape} array, the model takes uint8"
                f" {(*size, 3)} face crops"
            )
        return face
    if face.shape[:2] != tuple(size):
        raise DataError(
            f"{where}: image is {face.shape[1]}x{face.shape[0]}, the model takes aligned {size[1]}x{size[0]} face"
            " crops; align it first (keras-insightface align) or pass a face detector"
        )
    return face


def embed_faces(model, faces, batch_size=64):
    """L2-normalised embeddings (float32, one row per face) of aligned uint8 ``faces``, each the sum of the
    face's and its mirror image's embeddings, as ``evaluate_bin`` scores pairs."""
    from keras_insightface.evaluation.verification import embed_images, l2_normalize

    faces = np.asarray(faces)
    batch_size = max(1, min(batch_size, len(faces)))
    return l2_normalize(embed_images(model, faces, batch_size, flip=True)).astype(np.float32)


def _number_threshold(value, where):
    if not math.isfinite(value) or not -1 <= value <= 1:
        raise DataError(
            f"{where}: a cosine-similarity threshold lies in [-1, 1], received {value:g} (an L2-distance"
            " threshold d on unit vectors is the cosine 1 - d / 2 for squared, 1 - d^2 / 2 for plain distance)"
        )
    return value


def threshold_from_bin(path, model):
    """The best-accuracy threshold of ``model`` on the ``.bin`` pack at ``path`` (``evaluate_bin``)."""
    from keras_insightface.evaluation.verification import VerificationSet

    if model is None:
        raise DataError(f"{path}: a threshold from a verification pack needs the model to evaluate on it")
    if not os.path.isfile(path):
        raise DataError(f"{path}: verification pack does not exist")
    dataset = VerificationSet(path)
    result = dataset.evaluate(open_model(model))
    return result["threshold"], (
        f"{path}: best threshold of this model on {len(dataset.issame)} pairs (accuracy {result['accuracy']:.4f})"
    )


def threshold_from_history(path, set_name=None):
    """The ``<set>_thresh`` of the epoch with the best ``<set>`` accuracy in a ``Train`` history JSON."""
    from keras_insightface.plot import eval_keys, key_epochs, load_history

    history, _ = load_history(os.fspath(path))
    sets = eval_keys(history)
    if not sets:
        raise DataError(
            f"{path}: no verification results in this history (no '<set>_thresh' keys); train with eval_paths"
            " (--eval) to record thresholds, or give a .bin pack or a number"
        )
    set_name = sets[0] if set_name is None else set_name
    if set_name not in sets:
        raise DataError(f"{path}: no verification set {set_name!r} in this history; it has {', '.join(sets)}")
    accuracy, thresholds = np.asarray(history[set_name], "float64"), history[set_name + "_thresh"]
    if len(thresholds) != len(accuracy) or not np.isfinite(accuracy).any():
        raise DataError(
            f"{path}: {set_name!r} has {len(accuracy)} accuracies and {len(thresholds)} thresholds, or none finite"
        )
    best = int(np.nanargmax(accuracy))
    epoch = int(key_epochs(history, set_name)[best])
    value = _number_threshold(float(thresholds[best]), f"{path}: {set_name}_thresh of epoch {epoch}")
    return value, f"{path}: {set_name} threshold of epoch {epoch} (best {set_name} accuracy {accuracy[best]:.4f})"


def resolve_threshold(spec, model=None, set_name=None):
    """``(threshold, source text)`` from a number, a ``.bin`` pack (evaluated with ``model``) or a history JSON
    (``set_name``: its verification set, default the first); see the module docstring."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return _number_threshold(float(spec), "threshold"), f"given number {spec:g}"
    text = os.fspath(spec)
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        return _number_threshold(value, "threshold"), f"given number {value:g}"
    suffix = Path(text).suffix.lower()
    if suffix == ".bin":
        return threshold_from_bin(text, model)
    if suffix == ".json":
        return threshold_from_history(text, set_name)
    raise DataError(
        f"threshold {text!r}: expected a number, a .bin verification pack or a training history .json"
    )


def compare(model, image_a, image_b, threshold=None, prepare=None, set_name=None):
    """Cosine similarity of two faces and, with ``threshold`` (any ``resolve_threshold`` spec), the decision.

    Returns ``{"similarity", "same", "threshold", "threshold_source"}``; ``same`` is ``similarity >
    threshold``, and ``same``, ``threshold`` and ``threshold_source`` are ``None`` without a threshold.
    """
    model = open_model(model)
    size = model_input_size(model)
    faces = [load_face(image, size, prepare, where) for image, where in ((image_a, "image_a"), (image_b, "image_b"))]
    first, second = embed_faces(model, np.stack(faces))
    similarity = float(np.dot(first.astype("float64"), second.astype("float64")))
    value, source = (None, None) if threshold is None else resolve_threshold(threshold, model, set_name)
    return {
        "similarity": similarity,
        "same": None if value is None else bool(similarity > value),
        "threshold": value,
        "threshold_source": source,
    }

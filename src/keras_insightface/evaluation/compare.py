"""1:1 face comparison: the cosine similarity of two aligned faces, and the threshold that decides "same person".

``compare(model, image_a, image_b, threshold)`` embeds both faces as verification does (the embedding of the
face plus that of its mirror image, L2-normalised) and returns their cosine similarity; with a threshold the
pair is the same person when ``similarity > threshold``.

``model`` is a Keras basic model, a model file (``.keras`` / ``.h5`` / ``.onnx`` / ``.pt``) or any callable
``uint8 NHWC RGB batch -> (B, D)``, opened by ``inference.embedders.open_model``. Images are file paths (JPEG,
PNG, BMP) or uint8 ``(H, W, 3)`` RGB arrays and must be aligned face crops of the model's input size
(``keras-insightface align`` makes them); a ``prepare`` callable ``image -> aligned crop`` (e.g. a face
detector with ``norm_crop``) is applied first when given.

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

import math
import os
from pathlib import Path

import numpy as np

from keras_insightface.errors import DataError
from keras_insightface.inference.embed import embed_faces
from keras_insightface.inference.embedders import open_model
from keras_insightface.inference.images import load_face


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
    faces = [load_face(image, model.size, prepare, where) for image, where in ((image_a, "image_a"), (image_b, "image_b"))]
    first, second = embed_faces(model, np.stack(faces))
    similarity = float(np.dot(first.astype("float64"), second.astype("float64")))
    value, source = (None, None) if threshold is None else resolve_threshold(threshold, model, set_name)
    return {
        "similarity": similarity,
        "same": None if value is None else bool(similarity > value),
        "threshold": value,
        "threshold_source": source,
    }

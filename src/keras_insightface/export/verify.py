"""Run an exported model in its own runtime and compare it with the Keras model on the same images.

Runtimes: onnxruntime (``.onnx``), the TFLite interpreter (``ai_edge_litert`` when installed, else
``tf.lite.Interpreter``) and ``tf.saved_model.load`` (SavedModel directory). The exported model runs on all
images as one batch and on the first image alone, so a batch dimension that is not really dynamic fails.

Tolerance: embeddings are compared after L2 normalisation (the scale of a face embedding carries no meaning,
and random or untrained weights can give embeddings of any magnitude). A float32 export passes when every
component of the normalised embeddings is within ``1e-4`` of the Keras model's (max abs difference);
a float16 export when every cosine similarity between the two is at least ``0.999``.

Example:
    >>> import numpy as np
    >>> reference = np.array([[3.0, 4.0]])
    >>> compare(reference, reference * 2 + 1e-6, fp16=False).passed
    True
    >>> compare(reference, np.array([[4.0, 3.0]]), fp16=False).max_abs_diff
    0.2
"""

import dataclasses
import os
import warnings

import numpy as np

from keras_insightface.errors import DataError

FP32_MAX_ABS_DIFF = 1e-4
FP16_MIN_COSINE = 0.999
NUM_IMAGES = 8


class VerificationError(DataError):
    """The exported model does not reproduce the Keras model; the message gives the measured difference."""


@dataclasses.dataclass(frozen=True)
class Verification:
    """Exported vs Keras model on ``images`` images (batch sizes ``batch_sizes``)."""

    max_abs_diff: float
    min_cosine: float
    passed: bool
    criterion: str
    images: int = 0
    batch_sizes: tuple = ()

    def summary(self):
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"verification {verdict} on {self.images} images (batch sizes {list(self.batch_sizes)}): "
            f"max |diff| of L2-normalised embeddings {self.max_abs_diff:.2e}, min cosine {self.min_cosine:.6f} "
            f"(criterion: {self.criterion})"
        )


def default_images(model, count=NUM_IMAGES, seed=0):
    """``count`` deterministic random uint8 images of the model's input size."""
    return np.random.default_rng(seed).integers(0, 256, (count, *model.input_shape[1:]), dtype=np.uint8)


def _normalize(embeddings):
    embeddings = np.asarray(embeddings, np.float64)
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-30)


def compare(reference, exported, fp16):
    """``Verification`` of ``exported`` embeddings against ``reference`` (both ``(N, D)``)."""
    a, b = _normalize(reference), _normalize(exported)
    max_abs_diff = round(float(np.abs(a - b).max()), 12)
    min_cosine = float(np.sum(a * b, axis=-1).min())
    if fp16:
        return Verification(max_abs_diff, min_cosine, min_cosine >= FP16_MIN_COSINE, f"min cosine >= {FP16_MIN_COSINE}")
    criterion = f"max |diff| <= {FP32_MAX_ABS_DIFF:g}"
    return Verification(max_abs_diff, min_cosine, max_abs_diff <= FP32_MAX_ABS_DIFF, criterion)


def onnx_runner(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]


def _interpreter(path):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice in favour of ai_edge_litert
        return Interpreter(model_path=os.fspath(path))


def tflite_runner(path):
    interpreter = _interpreter(path)
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def run(images):
        interpreter.resize_tensor_input(input_index, images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, images)
        interpreter.invoke()
        return interpreter.get_tensor(output_index).copy()

    return run


def saved_model_runner(path):
    import tensorflow as tf

    signature = tf.saved_model.load(os.fspath(path)).signatures["serving_default"]
    return lambda images: next(iter(signature(tf.constant(images)).values())).numpy()


def runner(path):
    """A callable ``float32 (N, H, W, 3) -> (N, D)`` running the exported model at ``path``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return saved_model_runner(path)
    if path.endswith(".onnx"):
        return onnx_runner(path)
    if path.endswith(".tflite"):
        return tflite_runner(path)
    raise DataError(f"{path}: not an exported model (.onnx, .tflite or a SavedModel directory)")


def verify_export(path, model, images=None, fp16=False):
    """Compare the exported model at ``path`` with the Keras ``model``; returns a ``Verification``.

    ``images``: uint8 or float RGB ``(N, H, W, 3)`` (the first 8 are used); default: 8 deterministic random
    images. Does not raise on a mismatch: ``export_model`` does, see ``Verification.passed``.
    """
    images = default_images(model) if images is None else np.asarray(images)[:NUM_IMAGES]
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(model.input_shape[1:]):
        expected = ", ".join(str(d) for d in model.input_shape[1:])
        raise DataError(f"verification images must be (N, {expected}), received {images.shape}")
    batch = np.ascontiguousarray(images, dtype=np.float32)
    reference = np.asarray(model.predict(batch, batch_size=len(batch), verbose=0))
    try:
        run = runner(path)
        exported = np.asarray(run(batch))
        single = np.asarray(run(batch[:1]))
    except DataError:
        raise
    except Exception as error:  # the runtime rejects the graph (onnxruntime, TFLite raise their own types)
        first = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        return Verification(float("inf"), float("-inf"), False, f"runs in its runtime ({first})", len(batch))
    result = compare(np.concatenate([reference, reference[:1]]), np.concatenate([exported, single]), fp16)
    return dataclasses.replace(result, images=len(batch), batch_sizes=tuple(sorted({len(batch), 1})))

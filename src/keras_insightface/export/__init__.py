"""Export a basic (embedding) model to ONNX, TFLite or a SavedModel, verified against the Keras model.

``export_model`` folds BatchNormalization into the layers before it (``fold_bn``), writes the file with a
dynamic batch dimension (input ``image``: float32 NHWC RGB 0..255, normalised inside; output ``embedding``;
a mixed-precision model is exported as its float32 copy, ``precision.as_float32``),
stores the metadata inside it (``metadata.read_metadata``) and, with ``verify``, runs it in its own runtime on
8 images (batch 8 and batch 1) against the Keras model. A failed verification raises ``VerificationError``
with the measured difference and moves the file aside to ``NAME.unverified.EXT`` (a SavedModel directory to
``DIR.unverified``), so no unverified model is left under the requested name.

Routes (``route``): ONNX and TFLite go through TensorFlow Lite's converter, fed by ``jax2tf`` of the JAX model
(``"jax"``, in-process) or by a TensorFlow-backend SavedModel built in a subprocess (``"tensorflow"``);
``"auto"`` tries the JAX route first and falls back when a converter rejects the graph or the result fails
verification (tf2onnx mistranslates the 3-D matmuls of ViT and BoTNet attention coming from the JAX route). ONNX is converted from the float32 TFLite model by tf2onnx. SavedModels always
take the TensorFlow route: plain TF ops, no ``XlaCallModule``. See ``routes`` for why.

Dependencies are the ``export`` extra (``pip install keras_insightface[export]``); without them the call
raises ``MissingExtraError`` before doing any work.

Example::

    from keras_insightface.export import export_model
    result = export_model("r50_basic.keras", "r50.onnx")
    print(result.verification.summary())
    export_model("r50_basic.keras", "r50_fp16.tflite", format="tflite", fp16=True)
    export_model(model, "r50_savedmodel", format="savedmodel")
"""

import dataclasses
import os
import shutil
import tempfile
import time

from keras_insightface.atomic import write_bytes_atomic
from keras_insightface.errors import DataError
from keras_insightface.export.deps import MissingExtraError, require
from keras_insightface.export.metadata import build_metadata, read_metadata
from keras_insightface.export.routes import ExportError
from keras_insightface.export.verify import Verification, VerificationError, verify_export

__all__ = [
    "ExportError", "ExportResult", "MissingExtraError", "Verification", "VerificationError", "export_model",
    "read_metadata", "verify_export",
]

SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "savedmodel": ""}
ROUTES = ("auto", "jax", "tensorflow")


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What ``export_model`` wrote: ``path``, the ``route`` taken, the BN layers folded, the verification."""

    path: str
    format: str
    fp16: bool
    route: str
    folded_batch_norms: tuple
    verification: Verification | None
    seconds: float
    metadata: dict


def _check_args(out_path, format, fp16, route):
    if format not in SUFFIXES:
        raise DataError(f"{out_path}: unknown export format {format!r}; choose one of {', '.join(SUFFIXES)}")
    if route not in ROUTES:
        raise DataError(f"{out_path}: unknown route {route!r}; choose one of {', '.join(ROUTES)}")
    if SUFFIXES[format] and not out_path.endswith(SUFFIXES[format]):
        raise DataError(f"{out_path}: a {format} export needs a file name ending in {SUFFIXES[format]}")
    if fp16 and format == "savedmodel":
        raise DataError(f"{out_path}: fp16 applies to onnx and tflite exports, not savedmodel")
    if format == "savedmodel" and route == "jax":
        raise DataError(f"{out_path}: SavedModels come from the TensorFlow route; use route='auto' or 'tensorflow'")
    saved_model = os.path.isfile(os.path.join(out_path, "saved_model.pb"))
    if os.path.isdir(out_path) and os.listdir(out_path) and not saved_model:
        raise DataError(f"{out_path}: a non-empty folder that is not a SavedModel; not overwriting it")


def _basic_model(model):
    import keras

    from keras_insightface.export.precision import as_float32

    if isinstance(model, (str, os.PathLike)):
        from keras_insightface.saving import load_model

        model = load_model(model)
    if not isinstance(model, keras.Model):
        raise DataError(f"export needs a Keras model or a model file path, received {type(model).__name__}")
    inputs, outputs = model.inputs, model.outputs
    shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
    if len(inputs) != 1 or len(shape) != 4 or None in shape[1:] or shape[-1] != 3 or len(outputs) != 1:
        raise DataError(
            f"{model.name}: not a basic model: export needs one (batch, H, W, 3) input with static H and W and one "
            f"embedding output, received inputs {[tuple(t.shape) for t in inputs]} and {len(outputs)} outputs"
        )
    return as_float32(model)


def _convert(model, route, workdir, build):
    """``(build(graph source of route), route)``; a converter's failure becomes an ``ExportError``."""
    from keras_insightface.export.routes import jax_function, tensorflow_saved_model

    sources = {"jax": lambda: jax_function(model), "tensorflow": lambda: tensorflow_saved_model(model, workdir)}
    try:
        return build(sources[route]()), route
    except Exception as error:  # converters raise many types (ConverterError, ValueError, RuntimeError ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExportError(f"{model.name}: could not convert the model: {route} route: {type(error).__name__}: "
                          f"{first[:500]}") from None


def _write_tflite(model, out_path, fp16, route, workdir, meta):
    from keras_insightface.export import tflite
    from keras_insightface.export.metadata import INPUT_NAME, KEY, OUTPUT_NAME

    flat, used = _convert(model, route, workdir, lambda source: tflite.convert(source, fp16))
    meta = meta(used)
    write_bytes_atomic(out_path, tflite.finish(flat, meta, KEY, INPUT_NAME, OUTPUT_NAME))
    return used, meta


def _write_onnx(model, out_path, fp16, route, workdir, meta, opset):
    from keras_insightface.export import onnx, tflite
    from keras_insightface.export.metadata import INPUT_NAME, KEY, OUTPUT_NAME

    def build(source):
        return onnx.from_tflite(tflite.finish(tflite.convert(source), {}, KEY, INPUT_NAME, OUTPUT_NAME), opset)

    proto, used = _convert(model, route, workdir, build)
    meta = meta(used)
    onnx.write(onnx.to_float16(proto) if fp16 else proto, out_path, meta)
    return used, meta


def _write_saved_model(model, out_path, workdir, meta):
    import json

    from keras_insightface.export.metadata import ASSET
    from keras_insightface.export.routes import tensorflow_saved_model

    saved = tensorflow_saved_model(model, workdir)
    meta = meta("tensorflow")
    os.makedirs(os.path.join(saved, "assets"), exist_ok=True)
    with open(os.path.join(saved, "assets", ASSET), "w", encoding="utf-8") as file:
        json.dump(meta, file, indent=1, sort_keys=True)
    shutil.rmtree(out_path, ignore_errors=True)
    shutil.move(saved, out_path)
    return "tensorflow", meta


def _remove(out_path):
    if os.path.isdir(out_path):
        shutil.rmtree(out_path)
    else:
        os.remove(out_path)


def _set_aside(out_path):
    """Move a failed export to ``NAME.unverified.EXT`` (``DIR.unverified``); returns the new path."""
    stem, suffix = os.path.splitext(out_path) if os.path.isfile(out_path) else (out_path.rstrip("/\\"), "")
    aside = f"{stem}.unverified{suffix}"
    if os.path.isdir(aside):
        shutil.rmtree(aside)
    os.replace(out_path, aside)
    return aside


def export_model(
    model, out_path, format="onnx", fp16=False, fold_bn=True, verify=True, images=None, route="auto", opset=17
):
    """Export a basic model (``keras.Model`` or a ``.keras`` / seed ``.h5`` path) and verify it.

    Args:
        model: the basic model or its file.
        out_path: ``.onnx`` / ``.tflite`` file, or the SavedModel directory.
        format: ``"onnx"``, ``"tflite"`` or ``"savedmodel"``.
        fp16: float16 weights (TFLite) or weights and arithmetic (ONNX); inputs and outputs stay float32.
        fold_bn: fold BatchNormalization into the preceding Conv2D / DepthwiseConv2D / Dense (``fold_bn``).
        verify: compare with the Keras model right after writing; raise ``VerificationError`` on a mismatch.
        images: verification images ``(N, H, W, 3)`` uint8 or float 0..255 (first 8); default 8 random ones.
        route: ``"auto"``, ``"jax"`` or ``"tensorflow"`` (see the module docstring).
        opset: ONNX opset.

    Returns:
        an ``ExportResult``.
    """
    start = time.perf_counter()
    out_path = os.fspath(out_path)
    _check_args(out_path, format, fp16, route)
    require(format, fp16)
    source = _basic_model(model)
    if fold_bn:
        from keras_insightface.export.fold_bn import fold_batch_norms

        exported, folded = fold_batch_norms(source)
    else:
        exported, folded = source, []

    def meta(used):
        return build_metadata(source, format, fp16, folded, used)

    if os.path.dirname(os.path.abspath(out_path)):
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    # "auto": the JAX route first; a converter error or an export that fails verification falls back to the
    # TensorFlow route (e.g. tf2onnx mistranslates the 3-D matmuls of attention from the JAX route's TFLite)
    attempts = ["jax", "tensorflow"] if route == "auto" and format != "savedmodel" else [route]
    failures = []
    for attempt in attempts:
        last = attempt == attempts[-1]
        try:
            with tempfile.TemporaryDirectory() as workdir:
                if format == "savedmodel":
                    used, metadata = _write_saved_model(exported, out_path, workdir, meta)
                elif format == "tflite":
                    used, metadata = _write_tflite(exported, out_path, fp16, attempt, workdir, meta)
                else:
                    used, metadata = _write_onnx(exported, out_path, fp16, attempt, workdir, meta, opset)
        except ExportError as error:
            failures.append(str(error))
            if last:
                raise ExportError("; ".join(failures)) from None
            continue
        verification = verify_export(out_path, source, images, fp16) if verify else None
        if verification is None or verification.passed:
            break
        failures.append(f"{attempt} route: {verification.summary()}")
        if not last:
            _remove(out_path)
            continue
        aside = _set_aside(out_path)
        raise VerificationError(
            f"{out_path}: the exported {format} model does not reproduce the Keras model {source.name}: "
            f"max |diff| of L2-normalised embeddings {verification.max_abs_diff:.3g}, min cosine "
            f"{verification.min_cosine:.6f} (needed: {verification.criterion}); the export is kept at {aside}"
            + (f" (tried: {'; '.join(failures[:-1])})" if len(failures) > 1 else "")
        )
    seconds = time.perf_counter() - start
    return ExportResult(out_path, format, fp16, used, tuple(folded), verification, seconds, metadata)

"""What a basic model is and costs: parameters, GFLOPs, CPU latency, embedding size and input contract.

``model_summary`` takes a Keras model, a ``.keras`` / seed ``.h5`` file, a builtin backbone name (built by
``buildin_models`` with its defaults: GDC head, 512-d embedding) or an exported ``.onnx`` / ``.tflite`` file
(read by ``inference.graph_summary``: parameters and multiply-accumulates from the graph, onnxruntime's or the
TFLite interpreter's CPU latency) and returns a dict; ``format_summary`` makes it printable
(``keras-insightface summary MODEL``).

- GFLOPs: ``flops.gflops`` of one image at the model's input size (112x112), in the field's convention:
  multiply-accumulates of the convolutions and matrix products, the figure insightface's and the papers'
  tables quote (r50 6.3). XLA's count of the compiled forward (multiply and add apart, elementwise work
  included; ``flops.gflops(model, convention="flops")``) is printed beside it.
- Latency: the median of ``runs`` calls of the jitted inference forward (``flops.jitted_forward``) on JAX's
  CPU device, after compilation and two warm-up calls; milliseconds per batch of ``batch_size``.
- Input: ``(None, H, W, 3)`` RGB NHWC 0..255; ``normalization`` describes the ``Rescaling`` layer fed by the
  input (``buildin_models`` and converted seed models have ``normalize``: ``(x - 127.5) / 128``), or is
  ``None`` when the model has none and expects normalised input.

Example:
    >>> import keras
    >>> from keras_insightface.models import buildin_models
    >>> inputs = keras.Input((112, 112, 3))
    >>> stem = keras.Model(inputs, keras.layers.Conv2D(8, 3, strides=4)(inputs), name="tiny")
    >>> info = model_summary(buildin_models(stem, emb_shape=16), runs=2)
    >>> info["parameters"], info["embedding_size"], info["input_shape"], info["output_layer"]
    (6720, 16, (None, 112, 112, 3), 'embedding')
    >>> print(format_summary(info))  # doctest: +ELLIPSIS
    model          tiny
    parameters     6,720 (6,672 trainable)
    GFLOPs         0.0001757 per image (multiply-accumulates; XLA's count 0.0004... GFLOPs)
    CPU latency    ... ms per batch of 1 (median of 2 jitted calls, JAX CPU)
    embedding      16-d, output layer 'embedding'
    input          Bx112x112x3 float32 (NHWC, RGB 0..255, batch B dynamic)
    normalization  (x - 127.5) / 128 (layer 'normalize')
    >>> model_summary("r100")    # a backbone name, a .keras, seed .h5, .onnx or .tflite file   # doctest: +SKIP
"""

import os
import statistics
import time

import numpy as np

from keras_insightface.errors import DataError

GRAPH_SUFFIXES = (".onnx", ".tflite")


def load_summary_model(model):
    """A Keras model from a model object, a ``.keras`` / ``.h5`` path or a builtin backbone name."""
    if not isinstance(model, (str, os.PathLike)):
        if not hasattr(model, "count_params"):
            raise DataError(
                f"model: expected a Keras model, a .keras/.h5 file or a backbone name, received {type(model).__name__}"
            )
        return model
    from keras_insightface.backbones import list_backbones

    text = os.fspath(model)
    if text.lower().endswith((".keras", ".h5")) or os.path.exists(text):
        from keras_insightface.saving import load_model

        return load_model(text)
    if text.lower() in list_backbones():
        from keras_insightface.models import buildin_models

        return buildin_models(text, weights=None, preset="arcface_torch")
    raise DataError(
        f"{text}: neither a .keras/.h5/.onnx/.tflite model file nor a builtin backbone (keras-insightface models "
        "lists them)"
    )


def _fed_by_input(layer, model):
    try:
        return layer.input is model.inputs[0]
    except (AttributeError, ValueError):  # a layer used at several places has no single input
        return False


def input_normalization(model):
    """Text of the ``Rescaling`` right after the model's input, as ``(x - mean) / std``; ``None`` without one."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.Rescaling) and _fed_by_input(layer, model):
            scale, offset = float(np.mean(layer.scale)), float(np.mean(layer.offset))
            if scale == 0:
                return f"constant {offset:g} (layer {layer.name!r})"
            return f"(x - {-offset / scale:g}) / {1 / scale:g} (layer {layer.name!r})"
    return None


def cpu_latency_ms(model, batch_size=1, runs=20):
    """Median milliseconds of ``runs`` jitted inference calls on a ``batch_size`` batch, on JAX's CPU device."""
    import jax

    from keras_insightface.flops import jitted_forward

    if batch_size < 1 or runs < 1:
        raise ValueError(f"batch_size and runs must be positive, received {batch_size} and {runs}")
    forward, variables = jitted_forward(model)
    cpu = jax.devices("cpu")[0]
    images = np.random.default_rng(0).uniform(0, 255, (batch_size, *model.input_shape[1:])).astype("float32")
    variables, images = jax.device_put((variables, images), cpu)
    for _ in range(3):  # compile, then two warm-up calls
        jax.block_until_ready(forward(*variables, images))
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(forward(*variables, images))
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def _graph_file_summary(path, batch_size, runs):
    """``graph_summary``'s dict of an ``.onnx`` / ``.tflite`` file, or ``None`` for other paths."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in GRAPH_SUFFIXES:
        return None
    if not os.path.isfile(path):
        raise DataError(f"{os.fspath(path)}: model file does not exist")
    from keras_insightface.inference import graph_summary

    reader = graph_summary.onnx_summary if suffix == ".onnx" else graph_summary.tflite_summary
    return reader(path, batch_size=batch_size, runs=runs)


def model_summary(model, batch_size=1, runs=20):
    """The summary dict of ``model`` (object, ``.keras`` / ``.h5`` / ``.onnx`` / ``.tflite`` path or backbone
    name); see the module doc."""
    from keras_insightface.flops import gflops

    if isinstance(model, (str, os.PathLike)):
        graph = _graph_file_summary(model, batch_size, runs)
        if graph is not None:
            return graph
    model = load_summary_model(model)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise DataError(
            f"{model.name}: a basic model has one input and one output, this one has {len(model.inputs)} and"
            f" {len(model.outputs)}"
        )
    return {
        "name": model.name,
        "format": "Keras",
        "parameters": int(model.count_params()),
        "trainable_parameters": _count(model.trainable_weights),
        "gflops": gflops(model),
        "xla_gflops": gflops(model, convention="flops"),
        "latency_ms": cpu_latency_ms(model, batch_size, runs),
        "latency_batch_size": batch_size,
        "latency_runs": runs,
        "runtime": "jitted calls, JAX CPU",
        "embedding_size": int(model.output_shape[-1]),
        "input_shape": (None, *model.input_shape[1:]),
        "input_dtype": str(model.inputs[0].dtype),
        "input_layout": "NHWC, RGB",
        "normalization": input_normalization(model),
        "output_layer": model.layers[-1].name,
    }


def format_summary(summary):
    """Aligned ``label  value`` lines of a ``model_summary`` dict (a Keras model's or an exported file's)."""
    s = summary
    keras_model = s["trainable_parameters"] is not None
    shape = "x".join("B" if n is None else str(n) for n in s["input_shape"])
    batch = "batch B dynamic" if s["input_shape"][0] is None else "fixed batch"
    normalization = s["normalization"] or "none found: the model expects normalised input"
    parameters = f"{s['trainable_parameters']:,} trainable" if keras_model else "graph weights"
    counted = f"XLA's count {s['xla_gflops']:.4g} GFLOPs" if s["xla_gflops"] is not None else "counted on the graph"
    rows = [
        ("model", s["name"] if keras_model else f"{s['name']} ({s['format']})"),
        ("parameters", f"{s['parameters']:,} ({parameters})"),
        ("GFLOPs", f"{s['gflops']:.4g} per image (multiply-accumulates; {counted})"),
        ("CPU latency", f"{s['latency_ms']:.2f} ms per batch of {s['latency_batch_size']}"
                        f" (median of {s['latency_runs']} {s['runtime']})"),
        ("embedding", f"{s['embedding_size']}-d, output {'layer' if keras_model else 'tensor'} {s['output_layer']!r}"),
        ("input", f"{shape} {s['input_dtype']} ({s['input_layout']}{' 0..255' if keras_model else ''}, {batch})"),
        ("normalization", normalization),
    ]
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:<{width}}{value}" for label, value in rows)

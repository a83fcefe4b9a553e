"""What an exported model file is and costs: ONNX (onnx + onnxruntime) and TFLite (a TFLite interpreter).

The dict has the keys of ``summary.model_summary`` (``format_summary`` prints both):

- parameters: elements of the graph's constant weight tensors (ONNX initializers, TFLite operator inputs that no
  operator writes), index and shape tensors (int64, and int32 in TFLite) left out. An exporter that folds
  BatchNormalization into the convolutions leaves its four vectors out, one that keeps it counts its moving
  statistics too, and PyTorch's stores identical tensors (an untrained network's) once.
- GFLOPs: multiply-accumulates of one image, the field's convention (``flops.py``), counted from the graph:
  ONNX ``Conv``, ``ConvTranspose``, ``Gemm`` and ``MatMul`` with tensor shapes from ``onnx.shape_inference`` on
  a batch of one; TFLite ``CONV_2D``, ``DEPTHWISE_CONV_2D``, ``TRANSPOSE_CONV``, ``FULLY_CONNECTED`` and
  ``BATCH_MATMUL`` with the interpreter's shapes. A convolution costs output values x kernel taps x input
  channels per group; a matrix product output values x the contracted size.
- latency: the median of ``runs`` CPU calls (onnxruntime's CPU provider, the TFLite interpreter) on random
  input, after two warm-up calls; a graph with a fixed batch is timed at that batch.
- input: shape (``None`` for a dynamic batch), dtype and layout (NCHW or NHWC, from where the 3 channels are);
  normalization: whether the ONNX graph normalises itself (insightface's test, ``onnx_normalises_itself``, as
  ``eval`` decides it); TFLite graphs are not read for it.

Example:
    >>> info = onnx_summary("r50.onnx", runs=10)             # doctest: +SKIP
    >>> info["gflops"], info["embedding_size"], info["input_layout"]   # doctest: +SKIP
    (6.3..., 512, 'NCHW, RGB')
"""

import importlib
import os
import statistics
import time
import warnings

import numpy as np

from keras_insightface.errors import DataError
from keras_insightface.inference.embedders import onnx_normalises_itself

NOT_PARAMETERS = ("int64", "int32", "bool", "object")  # ONNX and TFLite index, shape and flag tensors
TFLITE_INTERPRETERS = (  # LiteRT, its predecessor, and TensorFlow's own (deprecated, still in 2.21)
    "ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite.python.interpreter",
)
INSTALL_EXPORT = "pip install keras_insightface[export]"


def _median_ms(call, runs):
    """Median milliseconds of ``runs`` calls of ``call()``, after two warm-up calls."""
    if runs < 1:
        raise ValueError(f"batch_size and runs must be positive, received runs={runs}")
    for _ in range(2):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _random_input(shape, dtype):
    """Random values of an image input: 0..255 for floats, the whole range of integer types (uint8: 0..255)."""
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(0, 255, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)


def _layout(shape):
    if len(shape) == 4 and shape[1] == 3:
        return "NCHW, RGB"
    return "NHWC, RGB" if len(shape) == 4 and shape[3] == 3 else f"{len(shape)}-d input"


def _summary(path, file_format, runtime, parameters, macs, timing, embedding, shape, dtype, normalization, output):
    """The summary dict (``summary.model_summary``'s keys) of a graph file; ``timing`` is ``(ms, batch, runs)``."""
    latency, batch, runs = timing
    return {
        "name": os.path.splitext(os.path.basename(os.fspath(path)))[0],
        "format": file_format,
        "parameters": parameters,
        "trainable_parameters": None,
        "gflops": macs / 1e9,
        "xla_gflops": None,
        "latency_ms": latency,
        "latency_batch_size": batch,
        "latency_runs": runs,
        "runtime": runtime,
        "embedding_size": int(np.asarray(embedding).reshape(batch, -1).shape[-1]),
        "input_shape": tuple(shape),
        "input_dtype": np.dtype(dtype).name,
        "input_layout": _layout(shape),
        "normalization": normalization,
        "output_layer": output,
    }


def _batch_size(batch_size, fixed):
    """The batch timed: ``batch_size``, or the graph's ``fixed`` batch when it has one."""
    if batch_size < 1:
        raise ValueError(f"batch_size and runs must be positive, received batch_size={batch_size}")
    return fixed if fixed else batch_size


# ------------------------------------------------------------------------------------------------------ ONNX


def _onnx_modules(path):
    try:
        return importlib.import_module("onnx"), importlib.import_module("onnxruntime")
    except ImportError as error:
        raise DataError(f"{path}: ONNX models need onnx and onnxruntime ({error}); pip install keras_insightface[onnx]"
                        ) from None


def _dims(value_info):
    """A value's shape as ints, ``None`` for a dimension shape inference left symbolic or unknown."""
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]


def _onnx_shapes(onnx, proto):
    """``{tensor name: shape}`` of every tensor shape inference resolves, for a batch of one image."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    initializers = {init.name for init in proto.graph.initializer}
    for graph_input in proto.graph.input:
        if graph_input.name in initializers:
            continue
        dims = graph_input.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes = {init.name: list(init.dims) for init in inferred.graph.initializer}
    for info in (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output):
        dims = _dims(info)
        if dims is not None:
            shapes[info.name] = dims
    return shapes


def _known(shapes, name, node):
    shape = shapes.get(name)
    if shape is None or any(d is None for d in shape):
        raise DataError(
            f"{node.op_type} node {node.name or node.output[0]!r}: the shape of {name!r} is {shape or 'unknown'} "
            "after ONNX shape inference, so its multiply-accumulates cannot be counted (export with static shapes)"
        )
    return shape


def _onnx_node_macs(node, shapes):
    """Multiply-accumulates of one ONNX node (0 for operators that do not multiply-add)."""
    if node.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
        return 0
    out = int(np.prod(_known(shapes, node.output[0], node)))
    first = _known(shapes, node.input[0], node)
    if node.op_type == "Conv":  # weight (M, C / group, kh, kw): each output sums C / group x kh x kw products
        return out * int(np.prod(_known(shapes, node.input[1], node)[1:]))
    if node.op_type == "ConvTranspose":  # weight (C, M / group, kh, kw): each input value feeds M / group x kh x kw
        return int(np.prod(first)) * int(np.prod(_known(shapes, node.input[1], node)[1:]))
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        return out * first[0 if trans_a else 1]
    return out * first[-1]  # MatMul: numpy's matmul, contracted over the first input's last axis


def onnx_macs(proto):
    """Multiply-accumulates of one image through an ONNX model (``onnx.ModelProto``), from its graph."""
    import onnx

    shapes = _onnx_shapes(onnx, proto)
    if any(node.op_type in ("If", "Loop", "Scan") for node in proto.graph.node):
        raise DataError("the ONNX graph has control flow (If, Loop, Scan): its multiply-accumulates are not counted")
    return sum(_onnx_node_macs(node, shapes) for node in proto.graph.node)


def onnx_parameters(proto):
    """Elements of the initializers that are weights (int64 / int32 / bool index and shape tensors left out)."""
    import onnx

    count = 0
    for init in proto.graph.initializer:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(init.data_type)
        if dtype.name not in NOT_PARAMETERS:
            count += int(np.prod(init.dims))
    return count


def onnx_summary(path, batch_size=1, runs=20):
    """The summary dict of an ``.onnx`` embedding model; see the module doc."""
    onnx, onnxruntime = _onnx_modules(path)
    try:
        proto = onnx.load(os.fspath(path))
        session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    except Exception as error:  # onnx and onnxruntime raise their own exception types for unreadable graphs
        raise DataError(f"{path}: cannot load the ONNX model ({type(error).__name__}: {error})") from None
    if len(session.get_inputs()) != 1:
        raise DataError(f"{path}: an embedding model has one input, this one has {len(session.get_inputs())}")
    spec, output = session.get_inputs()[0], session.get_outputs()[0]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(
        next(i for i in proto.graph.input if i.name == spec.name).type.tensor_type.elem_type)
    shape = [d if isinstance(d, int) and d > 0 else None for d in spec.shape]
    batch = _batch_size(batch_size, shape[0])
    if any(d is None for d in shape[1:]):
        raise DataError(f"{path}: ONNX input {spec.name!r} has shape {spec.shape}; only the batch may be dynamic")
    images = _random_input((batch, *shape[1:]), dtype)
    last = {}
    latency = _median_ms(lambda: last.update(embedding=session.run([output.name], {spec.name: images})[0]), runs)
    try:
        macs = onnx_macs(proto)
    except DataError as error:
        raise DataError(f"{path}: {error}") from None
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if dtype == np.uint8 or onnx_normalises_itself(proto):
        normalization = "inside the graph (it takes RGB 0..255)"
    else:
        normalization = "none at the graph's start: feed (x - 127.5) / 127.5 (insightface's convention, as eval does)"
    return _summary(path, f"ONNX, opset {opset}", "onnxruntime CPU calls", onnx_parameters(proto), macs,
                    (latency, batch, runs), last["embedding"], shape, dtype, normalization, output.name)


# ---------------------------------------------------------------------------------------------------- TFLite


def _tflite_interpreter(path):
    """The first TFLite ``Interpreter`` class importable (LiteRT, tflite_runtime, TensorFlow), or a ``DataError``."""
    for name in TFLITE_INTERPRETERS:
        try:
            return importlib.import_module(name).Interpreter
        except ImportError:
            continue
    raise DataError(
        f"{path}: TFLite models need a TFLite interpreter (ai_edge_litert, tflite_runtime or tensorflow), and none "
        f"is installed; the export extra brings one: {INSTALL_EXPORT}"
    )


def _tflite_node_macs(op, shapes):
    """Multiply-accumulates of one TFLite operator (0 for operators that do not multiply-add)."""
    name, inputs, outputs = op["op_name"], list(op["inputs"]), list(op["outputs"])
    if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "FULLY_CONNECTED", "BATCH_MATMUL"):
        return 0
    out = int(np.prod(shapes[outputs[0]]))
    if name == "CONV_2D":  # filter (O, kh, kw, I / groups)
        return out * int(np.prod(shapes[inputs[1]][1:]))
    if name == "DEPTHWISE_CONV_2D":  # filter (1, kh, kw, O): one input channel per output value
        return out * int(np.prod(shapes[inputs[1]][1:3]))
    if name == "TRANSPOSE_CONV":  # inputs (output shape, filter (O, kh, kw, I), input): each input feeds O x kh x kw
        return int(np.prod(shapes[inputs[2]])) * int(np.prod(shapes[inputs[1]][:3]))
    if name == "FULLY_CONNECTED":  # weights (units, K)
        return out * int(shapes[inputs[1]][-1])
    first, out_shape = shapes[inputs[0]], shapes[outputs[0]]  # BATCH_MATMUL: (..., M, K) or adjoint (..., K, M)
    return out * int(first[-1] if first[-2] == out_shape[-2] else first[-2])


def tflite_summary(path, batch_size=1, runs=20):
    """The summary dict of a ``.tflite`` embedding model; see the module doc."""
    interpreter_class = _tflite_interpreter(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
        try:
            interpreter = interpreter_class(model_path=os.fspath(path))
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as error:
            raise DataError(f"{path}: cannot load the TFLite model ({error})") from None
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    if len(inputs) != 1:
        raise DataError(f"{path}: an embedding model has one input, this one has {len(inputs)}")
    signature = [int(d) for d in inputs[0].get("shape_signature", inputs[0]["shape"])]
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]  # the only op listing
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    shapes = {index: [int(d) for d in t["shape"]] for index, t in tensors.items()}
    written = {int(index) for op in ops for index in op["outputs"]} | {int(inputs[0]["index"])}
    constants = {int(index) for op in ops for index in op["inputs"]} - written - {-1}  # -1: an absent bias
    parameters = sum(int(np.prod(tensors[index]["shape"])) for index in constants
                     if np.dtype(tensors[index]["dtype"]).name not in NOT_PARAMETERS)
    macs = sum(_tflite_node_macs(op, shapes) for op in ops) // max(int(inputs[0]["shape"][0]), 1)
    batch = _batch_size(batch_size, signature[0] if signature[0] > 0 else None)
    if batch != inputs[0]["shape"][0]:
        interpreter.resize_tensor_input(inputs[0]["index"], [batch, *signature[1:]])
        interpreter.allocate_tensors()
    images = _random_input((batch, *signature[1:]), inputs[0]["dtype"])

    def call():
        interpreter.set_tensor(inputs[0]["index"], images)
        interpreter.invoke()

    latency = _median_ms(call, runs)
    shape = [None if d < 0 else d for d in signature]
    return _summary(path, "TFLite", "TFLite interpreter CPU calls", parameters, macs, (latency, batch, runs),
                    interpreter.get_tensor(outputs[0]["index"]), shape, inputs[0]["dtype"],
                    "not read from TFLite graphs (keras-insightface exports normalise inside)", outputs[0]["name"])

"""ONNX files from TFLite bytes: tf2onnx's TFLite reader, names, a ``batch`` dimension, metadata, float16.

The graph comes from the float32 TFLite model (``tf2onnx.convert.from_tflite``): the TFLite converter has
already lowered the StableHLO / TF ops to a small set of builtin ops and folded the constants, and tf2onnx
turns those into ONNX ops, removing the NHWC <-> NCHW transposes around convolutions where it can. Input and
output are renamed ``image`` / ``embedding`` with a dimension ``batch``; the metadata goes to
``metadata_props``. The input normalisation ``x * (1/128) + (-127.5/128)`` becomes ``Sub(127.5) -> Mul(1/128)``
(the same values, exactly for integer pixels) so that tools following insightface's model-zoo convention (a
``Sub`` and a ``Mul`` among the first nodes mean "normalises itself", e.g. ``inference.embedders.open_model``) feed raw pixels.
``fp16`` converts weights and arithmetic to float16 with onnxconverter-common, keeping
float32 input and output (``keep_io_types``).

Example:
    >>> import onnx
    >>> from onnx import helper, TensorProto
    >>> x = helper.make_tensor_value_info("in", TensorProto.FLOAT, ["n", 2])
    >>> y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 2])
    >>> proto = helper.make_model(helper.make_graph([helper.make_node("Relu", ["in"], ["out"])], "g", [x], [y]))
    >>> rename_value(proto.graph, "in", "image")
    >>> proto.graph.input[0].name, proto.graph.node[0].input[0]
    ('image', 'image')
"""

import os
import tempfile
import warnings

import numpy as np

import keras_insightface
from keras_insightface.atomic import atomic_path
from keras_insightface.export.metadata import INPUT_NAME, NORMALIZE_OFFSET, NORMALIZE_SCALE, OUTPUT_NAME

DEFAULT_OPSET = 17


def rename_value(graph, old, new):
    """Rename the value ``old`` to ``new`` everywhere in ``graph`` (inputs, outputs, node edges)."""
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def _name_batch(value):
    dims = value.type.tensor_type.shape.dim
    if dims:
        dims[0].ClearField("dim_value")
        dims[0].dim_param = "batch"


def _scalar(graph, name):
    from onnx import numpy_helper

    for tensor in graph.initializer:
        if tensor.name == name:
            value = numpy_helper.to_array(tensor)
            return float(value.reshape(-1)[0]) if value.size == 1 else None
    return None


def _const_operand(graph, node, other):
    """The scalar initializer value of ``node``'s operand that is not ``other``, else None."""
    names = [name for name in node.input if name != other]
    return _scalar(graph, names[0]) if len(node.input) == 2 and len(names) == 1 else None


def sub_mul_normalization(graph):
    """Rewrite ``image -> Mul(1/128) -> Add(-127.5/128)`` as ``Sub(127.5) -> Mul(1/128)``; True if done."""
    from onnx import helper, numpy_helper

    muls = [n for n in graph.node if INPUT_NAME in n.input and n.op_type == "Mul"]
    if len(muls) != 1 or not np.isclose(_const_operand(graph, muls[0], INPUT_NAME) or 0, NORMALIZE_SCALE):
        return False
    mul = muls[0]
    adds = [n for n in graph.node if mul.output[0] in n.input]
    if len(adds) != 1 or adds[0].op_type != "Add" or mul.output[0] in [o.name for o in graph.output]:
        return False
    add = adds[0]
    if not np.isclose(_const_operand(graph, add, mul.output[0]) or 0, NORMALIZE_OFFSET):
        return False
    mean, scale = f"{INPUT_NAME}_mean", f"{INPUT_NAME}_scale"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(127.5, np.float32), mean),
            numpy_helper.from_array(np.array(1 / 128, np.float32), scale),
        ]
    )
    sub = helper.make_node("Sub", [INPUT_NAME, mean], [f"{INPUT_NAME}_centered"], name="normalize_sub")
    new_mul = helper.make_node("Mul", [sub.output[0], scale], list(add.output), name="normalize_mul")
    nodes = [sub if n is mul else new_mul if n is add else n for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    unused = [t for t in graph.initializer if t.name not in used]
    for tensor in unused:
        graph.initializer.remove(tensor)
    return True


def from_tflite(flatbuffer, opset=DEFAULT_OPSET):
    """An ``onnx.ModelProto`` of TFLite bytes with input ``image`` and output ``embedding``."""
    import tf2onnx

    with tempfile.TemporaryDirectory() as workdir:
        path = os.path.join(workdir, "model.tflite")
        with open(path, "wb") as file:
            file.write(flatbuffer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf2onnx reads shapes with tf.lite.Interpreter, deprecated in TF
            proto, _ = tf2onnx.convert.from_tflite(path, opset=opset)
    graph = proto.graph
    rename_value(graph, graph.input[0].name, INPUT_NAME)
    rename_value(graph, graph.output[0].name, OUTPUT_NAME)
    _name_batch(graph.input[0])
    _name_batch(graph.output[0])
    sub_mul_normalization(graph)
    return proto


def to_float16(proto):
    """``proto`` with float16 weights and arithmetic, float32 input and output."""
    from onnxconverter_common import float16

    return float16.convert_float_to_float16(proto, keep_io_types=True)


def write(proto, path, metadata):
    """Set producer and ``metadata_props``, check the graph, save to ``path``."""
    import onnx

    proto.producer_name = "keras_insightface"
    proto.producer_version = keras_insightface.__version__
    proto.doc_string = f"Face embedding model: {metadata.get('input_shape')} RGB 0..255 -> {OUTPUT_NAME}"
    onnx.helper.set_model_props(proto, metadata)
    onnx.checker.check_model(proto)
    with atomic_path(path, "write the ONNX model") as tmp:
        onnx.save(proto, tmp)

"""Read the weights of an ONNX graph as numpy arrays, layer by layer in graph order, without running it.

``read_onnx_weights`` lists the graph's parametrised nodes in the (topological) order the file stores them:
``Conv`` (weight ``(out, in / group, kh, kw)``, optional bias), ``BatchNormalization``, ``PRelu`` (slopes
flattened to one per channel), ``Gemm`` / ``MatMul`` with a constant weight (as ``dense``, weight in PyTorch's
``(out, in)`` layout; a constant ``Add`` after a ``MatMul`` is its bias), plus ``Add`` nodes of two computed
tensors (residual joins, no weights). Constants come from the graph's initializers, ``Constant`` nodes and
layout ops on a constant (``Identity``, ``Cast``, ``Transpose``, ``Unsqueeze``, ``Squeeze``, ``Reshape``): the
PyTorch exporter shares equal initializers through ``Identity`` and, without constant folding, leaves PReLU
slopes behind an ``Unsqueeze`` and linear weights behind a ``Transpose``. Each entry keeps its data input and
output tensor names, so a caller can see which ``BatchNormalization`` follows which ``Conv`` (PyTorch's
exporter folds most BNs into the conv before them, and keeps the others).

``Sub`` / ``Mul`` / ``Div`` / ``Add`` of a scalar constant applied to the graph input before the first ``Conv``
are the model's own input normalisation: ``input_affine`` is then ``(a, b)`` with ``x -> a * x + b``; ``None``
when the graph has none (insightface's model zoo then feeds ``(x - 127.5) / 127.5``).

Example:
    >>> weights = read_onnx_weights("w600k_r50.onnx")        # doctest: +SKIP
    >>> [op.kind for op in weights.ops[:4]]                    # doctest: +SKIP
    ['conv', 'prelu', 'bn', 'conv']
"""

import collections

import numpy as np

from keras_insightface.errors import DataError

OnnxOp = collections.namedtuple("OnnxOp", "kind name input output arrays attrs")
OnnxWeights = collections.namedtuple("OnnxWeights", "ops input_affine")
_AFFINE_OPS = ("Sub", "Mul", "Div", "Add")
_SHAPE_OPS = ("Identity", "Cast", "Transpose", "Unsqueeze", "Squeeze", "Reshape")
# ops that pass a computed tensor on unchanged in value: a BN after an Unsqueeze of a Gemm still follows the Gemm
_PASS_OPS = ("Identity", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Dropout")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise DataError("reading an ONNX model needs the onnx package: pip install onnx") from None
    return onnx


def _load(path):
    onnx = _onnx()
    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except Exception as error:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise DataError(f"{path}: not a readable ONNX model ({type(error).__name__}: {error})") from None


def _constants(graph, path):
    """``{tensor name: array}`` of initializers, ``Constant`` nodes and layout ops on a constant."""
    from onnx import numpy_helper

    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            attribute = next((a for a in node.attribute if a.name == "value"), None)
            if attribute is None:
                raise DataError(f"{path}: Constant node {node.name or node.output[0]!r} has no tensor 'value'")
            values[node.output[0]] = numpy_helper.to_array(attribute.t)
        elif node.op_type in _SHAPE_OPS and node.input and node.input[0] in values:
            folded = _shape_op(node, values)
            if folded is not None:
                values[node.output[0]] = folded
    return values


def _shape_op(node, values):
    """The result of a layout op (``Identity``, ``Cast``, ``Transpose``, ``Unsqueeze``, ``Squeeze``, ``Reshape``)
    on a constant, as an exporter without constant folding leaves them on weights; ``None`` when its arguments
    are computed."""
    from onnx import helper

    array, attrs = values[node.input[0]], _attributes(node)
    if node.op_type == "Identity":
        return array
    if node.op_type == "Cast":
        return array.astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))
    if node.op_type == "Transpose":
        return np.transpose(array, attrs.get("perm"))
    second = node.input[1] if len(node.input) > 1 and node.input[1] else None
    if second is not None and second not in values:
        return None
    argument = [int(v) for v in values[second].reshape(-1)] if second is not None else attrs.get("axes")
    if node.op_type == "Reshape":
        return None if argument is None else array.reshape(
            [array.shape[i] if n == 0 else n for i, n in enumerate(argument)])
    if node.op_type == "Squeeze":
        return np.squeeze(array, axis=None if argument is None else tuple(argument))
    if argument is None:
        return None
    rank = array.ndim + len(argument)
    return np.expand_dims(array, tuple(sorted(axis % rank for axis in argument)))


def _attributes(node):
    from onnx import helper

    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


def _need(values, name, node, what, path):
    if name not in values:
        raise DataError(f"{path}: {node.op_type} node {node.name or node.output[0]!r}: its {what} {name!r} is "
                        "computed, not a constant weight")
    return values[name]


def _dense(node, values, attrs, path):
    """A ``Gemm`` / ``MatMul`` with a constant weight as PyTorch's ``(out, in)`` weight and bias (or ``None``)."""
    if node.op_type == "MatMul":
        if node.input[1] not in values:
            return None
        weight = values[node.input[1]]
        return None if weight.ndim != 2 else (weight.T, None)
    if node.input[1] not in values:
        return None
    if attrs.get("transA", 0):
        raise DataError(f"{path}: Gemm node {node.name or node.output[0]!r} transposes its input (transA=1)")
    weight = values[node.input[1]] * attrs.get("alpha", 1.0)
    weight = weight if attrs.get("transB", 0) else weight.T
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = np.broadcast_to(_need(values, node.input[2], node, "bias", path) * attrs.get("beta", 1.0),
                               weight.shape[:1]).copy()
    return weight, bias


def _add_dense_bias(ops, node, values):
    """A ``MatMul`` then ``Add`` of a constant vector is a dense layer with a bias: give the last op its bias."""
    last = ops[-1]
    other = [name for name in node.input if name != last.output]
    if len(other) == 1 and other[0] in values and values[other[0]].size == last.arrays["weight"].shape[0]:
        arrays = {**last.arrays, "bias": values[other[0]].reshape(-1)}
        ops[-1] = last._replace(arrays=arrays, output=node.output[0])


def _input_affine(graph, values, initializers):
    """``(a, b)`` of the scalar ``Sub`` / ``Mul`` / ``Div`` / ``Add`` chain from the graph input, or ``None``."""
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if not inputs:
        return None
    tensor, scale, shift, found = inputs[0], 1.0, 0.0, False
    for node in graph.node:
        if node.op_type == "Conv":
            break
        if node.op_type not in _AFFINE_OPS or tensor not in node.input:
            continue
        other = [name for name in node.input if name != tensor]
        if len(other) != 1 or other[0] not in values or values[other[0]].size != 1:
            continue
        constant = float(values[other[0]].reshape(()))
        if node.op_type == "Sub" and node.input[0] == tensor:
            shift -= constant
        elif node.op_type == "Add":
            shift += constant
        elif node.op_type == "Mul":
            scale, shift = scale * constant, shift * constant
        elif node.op_type == "Div" and node.input[0] == tensor:
            scale, shift = scale / constant, shift / constant
        else:
            continue
        tensor, found = node.output[0], True
    return (scale, shift) if found else None


def _with_sources(node, source):
    """``node`` with every computed input named by the tensor it passes on (see ``_PASS_OPS``)."""
    if not any(name in source for name in node.input):
        return node
    copy = type(node)()
    copy.CopyFrom(node)
    copy.input[:] = [source.get(name, name) for name in node.input]
    return copy


def read_onnx_weights(path):
    """The parametrised nodes of ONNX model ``path`` as ``OnnxWeights(ops, input_affine)`` (see the module)."""
    model = _load(path)
    graph = model.graph
    values = _constants(graph, path)
    ops, source = [], {}  # source: tensor -> the tensor it is a reshaped / passed-through copy of
    for node in graph.node:
        attrs = _attributes(node)
        name = node.name or node.output[0]
        if node.op_type in _PASS_OPS and node.input and node.input[0] not in values:
            source[node.output[0]] = source.get(node.input[0], node.input[0])
            continue
        node = _with_sources(node, source)
        if node.op_type == "Conv":
            arrays = {"weight": _need(values, node.input[1], node, "weight", path)}
            if len(node.input) > 2 and node.input[2]:
                arrays["bias"] = _need(values, node.input[2], node, "bias", path)
            ops.append(OnnxOp("conv", name, node.input[0], node.output[0], arrays, attrs))
        elif node.op_type == "BatchNormalization":
            keys = ("gamma", "beta", "mean", "var")
            arrays = {key: _need(values, tensor, node, key, path) for key, tensor in zip(keys, node.input[1:5])}
            attrs.setdefault("epsilon", 1e-5)
            ops.append(OnnxOp("bn", name, node.input[0], node.output[0], arrays, attrs))
        elif node.op_type == "PRelu":
            slope = _need(values, node.input[1], node, "slope", path)
            ops.append(OnnxOp("prelu", name, node.input[0], node.output[0], {"slope": slope.reshape(-1)}, attrs))
        elif node.op_type in ("Gemm", "MatMul"):
            dense = _dense(node, values, attrs, path)
            if dense is not None:
                arrays = {"weight": dense[0]} if dense[1] is None else {"weight": dense[0], "bias": dense[1]}
                ops.append(OnnxOp("dense", name, node.input[0], node.output[0], arrays, attrs))
        elif node.op_type == "Add" and not any(tensor in values for tensor in node.input):
            ops.append(OnnxOp("add", name, node.input[0], node.output[0], {}, attrs))
        elif node.op_type == "Add" and ops and ops[-1].kind == "dense" and "bias" not in ops[-1].arrays:
            _add_dense_bias(ops, node, values)
    if not ops:
        raise DataError(f"{path}: the graph has no Conv, BatchNormalization, PRelu or Gemm node with weights")
    initializers = {init.name for init in graph.initializer}
    return OnnxWeights(ops, _input_affine(graph, values, initializers))

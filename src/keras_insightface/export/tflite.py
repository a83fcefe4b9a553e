"""TFLite flatbuffers: conversion, a broadcast clean-up, tensor names and the metadata entry.

``convert`` runs TensorFlow's converter on a concrete function (the JAX route) or a SavedModel directory (the
TensorFlow route); ``fp16`` stores the weights as float16 (inputs and outputs stay float32). ``finish`` then
edits the flatbuffer with ``tensorflow.lite.tools.flatbuffer_utils``:

* JAX graphs with a dynamic batch broadcast every per-channel constant (BN scale, bias, PReLU slope) to the
  full activation shape at run time (``BROADCAST_TO`` fed by ``SHAPE`` ops). TFLite's ADD / MUL / ... broadcast
  by themselves, so a ``BROADCAST_TO`` whose only readers are such ops, each with another operand of exactly
  the broadcast shape, is removed, and then every op whose outputs nobody reads. This is exact (same values,
  same shapes) and makes both the TFLite and the ONNX model (converted from it) faster.
* the input tensor is named ``image`` and the output ``embedding``;
* a metadata entry ``keras_insightface`` holds the JSON metadata.

Example:
    >>> from keras_insightface.export.tflite import add_metadata, read_tflite_metadata
    >>> from tensorflow.lite.tools import flatbuffer_utils
    >>> import tensorflow as tf
    >>> fn = tf.function(lambda x: x * 2.0, input_signature=[tf.TensorSpec((None, 4), tf.float32)])
    >>> flat = convert(fn.get_concrete_function())
    >>> model = flatbuffer_utils.read_model_from_bytearray(bytearray(flat))
    >>> add_metadata(model, "keras_insightface", {"embedding_size": "4"})
    >>> read_tflite_metadata(flatbuffer_utils.convert_object_to_bytearray(model), "keras_insightface")
    {'embedding_size': '4'}
"""

import json

import numpy as np

ELEMENTWISE = ("ADD", "MUL", "SUB", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "POW")


def convert(source, fp16=False):
    """TFLite bytes of a concrete function or a SavedModel directory (``str``)."""
    import tensorflow as tf

    if isinstance(source, str):
        converter = tf.lite.TFLiteConverter.from_saved_model(source)
    else:
        module = tf.Module()
        module.forward = source
        converter = tf.lite.TFLiteConverter.from_concrete_functions([source], module)
    if fp16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _builtin_names():
    from tensorflow.lite.python import schema_py_generated as schema

    return {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def _op_name(model, op, names):
    code = model.operatorCodes[op.opcodeIndex]
    return names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")


def _signature(tensor):
    shape = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    return tuple(int(d) for d in shape) if shape is not None else ()


def _readers(graph):
    readers = {}
    for op in graph.operators:
        for index in op.inputs:
            readers.setdefault(int(index), []).append(op)
    return readers


def _removable_broadcast(model, graph, op, readers, names):
    """The source tensor of a ``BROADCAST_TO`` that its readers can take directly, else None."""
    target = int(op.outputs[0])
    source = int(op.inputs[0])
    users = readers.get(target, [])
    if not users or target in set(int(i) for i in graph.outputs):
        return None
    if len(_signature(graph.tensors[source])) > len(_signature(graph.tensors[target])):
        return None
    for user in users:
        others = [int(i) for i in user.inputs if int(i) != target]
        if _op_name(model, user, names) not in ELEMENTWISE or len(user.inputs) != 2 or len(others) != 1:
            return None
        if _signature(graph.tensors[others[0]]) != _signature(graph.tensors[target]):
            return None
    return source


def remove_broadcasts(model):
    """Remove redundant ``BROADCAST_TO`` ops and then dead ops from every subgraph; returns how many went."""
    names = _builtin_names()
    removed = 0
    for graph in model.subgraphs:
        changed = True
        while changed:
            changed = False
            readers = _readers(graph)
            outputs = set(int(i) for i in graph.outputs)
            for op in list(graph.operators):
                outs = [int(i) for i in op.outputs] if op.outputs is not None else []
                if _op_name(model, op, names) == "BROADCAST_TO":
                    source = _removable_broadcast(model, graph, op, readers, names)
                    if source is not None:
                        for user in readers[outs[0]]:
                            inputs = [source if int(i) == outs[0] else int(i) for i in user.inputs]
                            user.inputs = np.array(inputs, np.int32)
                        graph.operators.remove(op)
                        removed, changed = removed + 1, True
                        break
                if outs and all(o not in outputs and o not in readers for o in outs):
                    graph.operators.remove(op)
                    removed, changed = removed + 1, True
                    break
    return removed


def rename_io(model, input_name, output_name):
    """Name the first subgraph's single input and output tensors (and its signature keys)."""
    graph = model.subgraphs[0]
    graph.tensors[int(graph.inputs[0])].name = input_name.encode()
    graph.tensors[int(graph.outputs[0])].name = output_name.encode()
    for signature in model.signatureDefs or []:
        if signature.inputs:
            signature.inputs[0].name = input_name.encode()
        if signature.outputs:
            signature.outputs[0].name = output_name.encode()


def add_metadata(model, key, values):
    """Append (or replace) a metadata entry ``key`` holding ``values`` as JSON."""
    from tensorflow.lite.python import schema_py_generated as schema

    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(values, sort_keys=True).encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = key.encode(), len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name != key.encode()] + [entry]


def read_tflite_metadata(flatbuffer, key):
    """The JSON metadata entry ``key`` of TFLite bytes as a dict; ``{}`` when absent."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    for entry in model.metadata or []:
        if entry.name == key.encode():
            return json.loads(bytes(model.buffers[entry.buffer].data).decode())
    return {}


def finish(flatbuffer, metadata, key, input_name, output_name):
    """Clean-up, tensor names and metadata applied to TFLite bytes; returns the new bytes."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    remove_broadcasts(model)
    rename_io(model, input_name, output_name)
    add_metadata(model, key, metadata)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))

"""Fold inference-mode BatchNormalization into the Conv2D / DepthwiseConv2D / Dense that feeds it.

At inference a BN is a per-channel affine map ``y = (x - mean) * gamma / sqrt(var + eps) + beta``; when ``x`` is
the linear output of a kernel layer, the map moves into that layer's kernel and bias and the BN disappears.
This is Keras model surgery: a new functional graph of the same layers, where each folded kernel layer is a
new layer with a bias and each folded BN is left out, so every export format (and a plain ``.keras`` save) gets
the smaller graph. A BN is folded only where that is exact:

* it normalises the last axis and is called once;
* its input is the output of a Conv2D / DepthwiseConv2D / Dense without activation, called once, whose output
  nothing else reads (not another layer, not a model output) - or that layer followed by a ``Flatten`` of a
  ``1 x 1`` map (the ``GDC`` head's 1x1 conv -> flatten -> ``pre_embedding`` BN), which keeps the channels.

Nested functional models are folded inside; a BN and its producer must sit in the same functional graph.

Example:
    >>> import keras, numpy as np
    >>> from keras_insightface.export.fold_bn import fold_batch_norms
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> x = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="bn")(x))
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization(name="after_relu")(x))
    >>> folded, names = fold_batch_norms(model)
    >>> names, [layer.name for layer in folded.layers[1:]]
    (['bn'], ['conv', 'relu', 'after_relu'])
    >>> images = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 3)).astype("float32")
    >>> bool(np.allclose(folded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6))
    True
"""

import keras
import numpy as np
from keras.src.models.functional import Functional

KERNEL_LAYERS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)


def _history(tensor):
    return getattr(tensor, "_keras_history", None)


def _graph_nodes(model):
    return [node for nodes in model._nodes_by_depth.values() for node in nodes]


def _graph_usage(model):
    """For one functional graph: how often each layer is called, and how many nodes read each tensor."""
    calls, readers = {}, {}
    for node in _graph_nodes(model):
        layer = node.operation
        if isinstance(layer, keras.layers.InputLayer):
            continue
        calls[id(layer)] = calls.get(id(layer), 0) + 1
        for tensor in node.input_tensors:
            readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    for tensor in model.outputs:
        readers[id(tensor)] = readers.get(id(tensor), 0) + 1
    return calls, readers


def _only_reader(tensor, readers):
    return readers.get(id(tensor), 0) == 1


def _foldable_producer(bn, node, calls, readers):
    """The kernel layer whose output ``bn`` (called at ``node``) can absorb, else None."""
    if len(node.input_tensors) != 1 or calls.get(id(bn)) != 1:
        return None
    tensor = node.input_tensors[0]
    if bn.axis not in (-1, len(tensor.shape) - 1) or not _only_reader(tensor, readers):
        return None
    history = _history(tensor)
    if history is None:
        return None
    layer = history.operation
    if isinstance(layer, keras.layers.Flatten) and calls.get(id(layer)) == 1:
        inner = layer._inbound_nodes[history.node_index].input_tensors[0]
        if len(inner.shape) != 4 or tuple(inner.shape[1:3]) != (1, 1) or not _only_reader(inner, readers):
            return None
        layer = _history(inner).operation if _history(inner) else None
    if not isinstance(layer, KERNEL_LAYERS) or calls.get(id(layer)) != 1:
        return None
    if keras.activations.serialize(layer.activation) != "linear":
        return None
    return layer


def _find_folds(model, folds):
    """``{id(bn): (bn, producer)}`` over ``model`` and its nested functional models."""
    calls, readers = _graph_usage(model)
    for node in _graph_nodes(model):
        layer = node.operation
        if isinstance(layer, keras.layers.BatchNormalization):
            producer = _foldable_producer(layer, node, calls, readers)
            if producer is not None:
                folds[id(layer)] = (layer, producer)
        elif isinstance(layer, Functional):
            _find_folds(layer, folds)
    return folds


def _bn_affine(bn):
    """Per-channel ``(scale, shift)`` of an inference-mode BN, in float64."""
    mean = np.asarray(bn.moving_mean, np.float64)
    var = np.asarray(bn.moving_variance, np.float64)
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros_like(mean)
    scale = gamma / np.sqrt(var + bn.epsilon)
    return scale, beta - mean * scale


def folded_weights(producer, bn):
    """``[kernel, bias]`` of ``producer`` with ``bn`` applied to its output (float32)."""
    scale, shift = _bn_affine(bn)
    weights = producer.get_weights()
    kernel = np.asarray(weights[0], np.float64)
    bias = np.asarray(weights[1], np.float64) if producer.use_bias else np.zeros(scale.shape)
    if isinstance(producer, keras.layers.DepthwiseConv2D):  # output channel c * multiplier + m
        kernel = kernel * scale.reshape(kernel.shape[2], kernel.shape[3])
    else:
        kernel = kernel * scale
    return [kernel.astype(np.float32), (bias * scale + shift).astype(np.float32)]


def _folded_clone(producer, bn):
    """A new ``producer`` layer with a bias and the BN folded in (zero initializers: no random kernels to
    compile, the weights are set right after)."""
    config = producer.get_config()
    config["use_bias"] = True
    config.update({key: "zeros" for key in config if key.endswith("_initializer")})
    layer = producer.__class__.from_config(config)
    layer.build(producer.get_build_config()["input_shape"])
    layer.set_weights(folded_weights(producer, bn))
    return layer


def fold_batch_norms(model):
    """A model computing ``model`` at inference with every exactly-foldable BN folded; returns
    ``(folded model, folded BN names)``.

    The new model reuses ``model``'s other layers (and so their weights); each folded Conv2D /
    DepthwiseConv2D / Dense is a new layer with a bias. ``model`` itself computes what it did before. With
    nothing to fold, the result is an equivalent graph of the same layers.
    """
    if not isinstance(model, Functional):
        raise ValueError(f"{model.name}: BatchNormalization folding needs a functional model; pass fold_bn=False")
    folds = _find_folds(model, {})
    replacements = {id(producer): _folded_clone(producer, bn) for bn, producer in folds.values()}

    def clone_layer(layer):
        return replacements.get(id(layer), layer)

    def call_layer(layer, *args, **kwargs):
        if id(layer) in folds:
            return args[0]
        return layer(*args, **kwargs)

    folded = keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer, recursive=True)
    return folded, [bn.name for bn, _ in folds.values()]

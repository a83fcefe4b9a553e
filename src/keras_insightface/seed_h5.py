"""Load models saved as ``.h5`` by the seed system (Keras_insightface on TF-Keras 2) into Keras 3.

A TF-Keras 2 ``.h5`` holds the model config as JSON (``model_config``) and the weights per layer under
``model_weights/<layer>/`` in the order of the layer's ``weight_names``. Keras 3 reads that layout but not
everything TF-Keras 2 wrote into it, so the config is translated first:

- keys Keras 3 layers no longer take (``groups`` / ``kernel_*`` on separable and depthwise convs, ``fused``)
  are dropped; any other dropped key that was set is reported in a warning;
- mixed-precision dtype policies become ``float32`` (the loaded model is an inference / fine-tune model);
- ``hard_sigmoid`` keeps TF-Keras 2's formula ``clip(0.2 x + 0.5, 0, 1)`` (Keras 3 changed it to
  ``relu6(x + 3) / 6``, which would silently change every SE block of a seed GhostNet);
- raw ``tf.*`` calls (``TFOpLambda`` / ``SlicingOpLambda``, e.g. the ``tf.reduce_mean`` of the seed's SE
  modules) become ``SeedTFOp`` layers computed with ``keras.ops``;
- the seed's ``NormDense`` becomes ours (same kernel layout ``(emb, units * loss_top_k)``).

Seed models take ``(x - 127.5) / 128`` normalised input; ``normalize_inside=True`` (default) inserts our
``normalize`` Rescaling layer after the input, so the result takes RGB 0..255 like ``buildin_models`` models.

Example:
    >>> import numpy as np
    >>> import keras_insightface.seed_h5 as seed_h5
    >>> seed_h5.legacy_hard_sigmoid(np.array([-3.0, 1.0], "float32")).tolist()
    [0.0, 0.699999988079071]
"""

import copy
import inspect
import json
import os
import warnings

import h5py
import keras
import numpy as np
from keras import ops

from keras_insightface.atomic import atomic_path
from keras_insightface.errors import DataError
from keras_insightface.heads.norm_dense import NormDense
from keras_insightface.layers.normalize import l2_normalize

NESTED_MODELS = ("Functional", "Model", "Sequential")
# TF-Keras 2 keys that Keras 3 layers do not take and that never change what a layer computes.
HARMLESS_KEYS = frozenset(
    {"groups", "kernel_initializer", "kernel_regularizer", "kernel_constraint", "fused", "ragged", "sparse", "optional"}
)
BASE_LAYER_KEYS = frozenset({"name", "trainable", "dtype", "autocast", "activity_regularizer", "input_shape", "input_dim"})


@keras.saving.register_keras_serializable(package="keras_insightface")
def legacy_hard_sigmoid(x):
    """TF-Keras 2's hard sigmoid, ``clip(0.2 x + 0.5, 0, 1)``."""
    return ops.clip(0.2 * x + 0.5, 0.0, 1.0)


def _reduce(fn):
    def apply(x, axis=None, keepdims=False, name=None):
        return fn(x, axis=tuple(axis) if isinstance(axis, list) else axis, keepdims=keepdims)

    return apply


def _l2_normalize(x, axis=None, epsilon=1e-12, name=None, dim=None):
    axis = dim if axis is None else axis
    return l2_normalize(x, axis=tuple(axis) if isinstance(axis, list) else axis, epsilon=epsilon)


def _slice(x, slice_spec):
    index = tuple(
        slice(s["start"], s["stop"], s["step"]) if isinstance(s, dict) else (Ellipsis if s == "..." else s)
        for s in slice_spec
    )
    return x[index]


# TF function names as TF-Keras 2 records them in ``TFOpLambda`` configs, computed with keras.ops.
TF_OPS = {
    "math.reduce_mean": _reduce(ops.mean),
    "math.reduce_max": _reduce(ops.max),
    "math.reduce_min": _reduce(ops.min),
    "math.reduce_sum": _reduce(ops.sum),
    "concat": lambda values, axis, name=None: ops.concatenate(values, axis=axis),
    "stack": lambda values, axis=0, name=None: ops.stack(values, axis=axis),
    "math.multiply": lambda x, y, name=None: ops.multiply(x, y),
    "math.add": lambda x, y, name=None: ops.add(x, y),
    "__operators__.add": lambda x, y, name=None: ops.add(x, y),
    "math.subtract": lambda x, y, name=None: ops.subtract(x, y),
    "math.truediv": lambda x, y, name=None: ops.divide(x, y),
    "math.divide": lambda x, y, name=None: ops.divide(x, y),
    "nn.relu": lambda features, name=None: ops.relu(features),
    "nn.relu6": lambda features, name=None: ops.relu6(features),
    "math.sigmoid": lambda x, name=None: ops.sigmoid(x),
    "nn.silu": lambda features, beta=1.0, name=None: features * ops.sigmoid(beta * features),
    "nn.swish": lambda features, beta=1.0, name=None: features * ops.sigmoid(beta * features),
    "math.tanh": lambda x, name=None: ops.tanh(x),
    "reshape": lambda tensor, shape, name=None: ops.reshape(tensor, shape),
    "transpose": lambda a, perm=None, conjugate=False, name=None: ops.transpose(a, perm),
    "compat.v1.transpose": lambda a, perm=None, name=None, conjugate=False: ops.transpose(a, perm),
    "expand_dims": lambda input, axis, name=None: ops.expand_dims(input, axis),
    "compat.v1.squeeze": lambda input, axis=None, name=None, squeeze_dims=None: ops.squeeze(input, axis),
    "squeeze": lambda input, axis=None, name=None: ops.squeeze(input, axis),
    "identity": lambda input, name=None: input,
    "math.l2_normalize": _l2_normalize,
    "nn.l2_normalize": _l2_normalize,
    "__operators__.getitem": _slice,
}


@keras.saving.register_keras_serializable(package="keras_insightface")
class SeedTFOp(keras.layers.Layer):
    """A raw ``tf.*`` call from a TF-Keras 2 graph (``TFOpLambda``), computed with ``keras.ops``.

    ``first_arg`` is the name of the function's first (tensor or tensor-list) argument, ``tensor_kwargs`` names
    the keyword arguments that were tensors; the layer receives ``[*first, *tensor_kwargs]`` as inputs, where
    ``first`` has ``num_first`` entries (one for a plain tensor, several for e.g. ``tf.concat``'s list).
    """

    def __init__(self, function, call_kwargs=None, tensor_kwargs=(), num_first=1, list_first=False, **kwargs):
        super().__init__(**kwargs)
        if function not in TF_OPS:
            raise ValueError(f"tf.{function} is not supported; supported: {', '.join(sorted(TF_OPS))}")
        self.function, self.call_kwargs = function, dict(call_kwargs or {})
        self.tensor_kwargs, self.num_first, self.list_first = list(tensor_kwargs), int(num_first), bool(list_first)

    def call(self, inputs):
        inputs = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        first = inputs[: self.num_first] if self.list_first else inputs[0]
        tensors = dict(zip(self.tensor_kwargs, inputs[self.num_first :]))
        return TF_OPS[self.function](first, **self.call_kwargs, **tensors)

    def get_config(self):
        config = super().get_config()
        config.update(
            function=self.function,
            call_kwargs=self.call_kwargs,
            tensor_kwargs=self.tensor_kwargs,
            num_first=self.num_first,
            list_first=self.list_first,
        )
        return config


def _is_tensor_ref(value):
    return isinstance(value, list) and len(value) == 3 and isinstance(value[0], str) and isinstance(value[1], int)


def _translate_tf_op(layer, path):
    """TFOpLambda / SlicingOpLambda -> SeedTFOp with a plain multi-input node."""
    config = layer["config"]
    function = config["function"]
    if function not in TF_OPS:
        raise DataError(
            f"{path}: layer {layer['name']!r} calls tf.{function}, which this loader does not translate "
            f"(supported: {', '.join(sorted(TF_OPS))})"
        )
    nodes = []
    for node in layer["inbound_nodes"]:
        entries = [node] if isinstance(node[0], str) else node  # one tensor, or a list of tensors
        kwargs = dict(entries[0][3]) if len(entries[0]) > 3 else {}
        inputs = [entry[:3] for entry in entries]
        tensor_kwargs = [key for key, value in kwargs.items() if _is_tensor_ref(value)]
        inputs += [kwargs.pop(key) for key in tensor_kwargs]
        nodes.append([[*ref, {}] for ref in inputs])
    new_config = {
        "name": config["name"],
        "trainable": config.get("trainable", True),
        "function": function,
        "call_kwargs": kwargs,
        "tensor_kwargs": tensor_kwargs,
        "num_first": len(entries),
        "list_first": not isinstance(node[0], str),
    }
    return {"class_name": "SeedTFOp", "config": new_config, "name": layer["name"], "inbound_nodes": nodes}


def _translate_norm_dense(config, path, name):
    if config.get("partial_fc_split", 0) > 1:
        raise DataError(f"{path}: NormDense {name!r} stores partial_fc_split sub-kernels, not supported")
    keep = {"name", "trainable", "units", "loss_top_k", "append_norm"}
    return {key: value for key, value in config.items() if key in keep}


def _layer_class(class_name):
    return {"SeedTFOp": SeedTFOp, "NormDense": NormDense}.get(class_name) or getattr(keras.layers, class_name, None)


def _accepted_keys(cls):
    keys = set(BASE_LAYER_KEYS)
    for klass in cls.__mro__:
        if klass is keras.layers.Layer:
            break
        if "__init__" in vars(klass):
            keys |= set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs"}
    return keys


def _set_value(value):
    return value not in (None, False, 0, 1, {}, [], "", "channels_last")


def _translate_layer(layer, path, notes):
    class_name = layer["class_name"].split(">")[-1]
    if class_name in ("TFOpLambda", "SlicingOpLambda"):
        return _translate_tf_op(layer, path)
    layer = copy.deepcopy(layer)
    layer["class_name"] = class_name
    config = layer["config"]
    if class_name in NESTED_MODELS:
        config["layers"] = [_translate_layer(inner, path, notes) for inner in config["layers"]]
        return layer
    if isinstance(config.get("dtype"), dict) or config.get("dtype") in ("float16", "bfloat16"):
        config["dtype"] = "float32"
    for key in ("activation", "recurrent_activation"):
        if config.get(key) == "hard_sigmoid":
            config[key] = "keras_insightface>legacy_hard_sigmoid"
    if class_name == "NormDense":
        layer["config"] = _translate_norm_dense(config, path, layer["name"])
        return layer
    cls = _layer_class(class_name)
    if cls is None:
        raise DataError(
            f"{path}: layer {layer['name']!r} has class {layer['class_name']!r}, which this loader does not know "
            "(Keras layers, NormDense and tf.* ops are translated)"
        )
    accepted = _accepted_keys(cls) | ({"batch_input_shape"} if class_name == "InputLayer" else set())
    for key in sorted(set(config) - accepted):
        value = config.pop(key)
        if key not in HARMLESS_KEYS and _set_value(value):
            notes.append(f"{layer['name']}: dropped {key}={value!r}")
    return layer


def _read(path):
    if not os.path.isfile(path):
        raise DataError(f"{path}: model file does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{path}: not an HDF5 file ({error})") from None
    with handle:
        if "model_config" not in handle.attrs:
            raise DataError(
                f"{path}: holds weights only (no model_config); build the same architecture and call "
                "model.load_weights(path)"
            )
        raw = handle.attrs["model_config"]
        try:
            config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
            problem = None if isinstance(config, dict) and {"class_name", "config"} <= set(config) else \
                f"a JSON {type(config).__name__} without class_name and config"
        except (ValueError, TypeError) as error:  # not JSON text (UnicodeDecodeError is a ValueError)
            problem = error
        if problem is not None:
            raise DataError(f"{path}: model_config is not a Keras model config ({problem})")
        group = handle["model_weights"] if "model_weights" in handle else handle
        weights = {}
        for layer_name in group.attrs.get("layer_names", []):
            layer_name = layer_name.decode() if isinstance(layer_name, bytes) else layer_name
            layer_group = group[layer_name]
            names = [n.decode() if isinstance(n, bytes) else n for n in layer_group.attrs.get("weight_names", [])]
            weights[layer_name] = [(name, np.asarray(layer_group[name])) for name in names]
    return config, weights


def _weights_by_layer(weights):
    """Arrays per layer name: a top-level group is one layer; a nested model's group is split by variable name."""
    by_layer = {}
    for group_name, entries in weights.items():
        for name, value in entries:
            owner = name.split("/")[-2] if name.count("/") >= 1 else group_name
            by_layer.setdefault(group_name, []).append(value)
            if owner != group_name:
                by_layer.setdefault(owner, []).append(value)
    return by_layer


def _insert_normalize(config):
    """Rewire every consumer of the input layer to a ``normalize`` Rescaling ((x - 127.5) / 128) after it."""
    refs = config["input_layers"]
    input_name = refs[0] if isinstance(refs[0], str) else refs[0][0]
    for layer in config["layers"]:
        for node in layer["inbound_nodes"]:
            for entry in [node] if isinstance(node[0], str) else node:
                if entry[0] == input_name:
                    entry[0] = "normalize"
    rescaling = {
        "class_name": "Rescaling",
        "config": {"name": "normalize", "scale": 1 / 128, "offset": -127.5 / 128, "dtype": "float32"},
        "name": "normalize",
        "inbound_nodes": [[[input_name, 0, 0, {}]]],
    }
    index = next(i for i, layer in enumerate(config["layers"]) if layer["name"] == input_name)
    config["layers"].insert(index + 1, rescaling)


def load_seed_h5(path, normalize_inside=True):
    """A Keras 3 model from a seed ``.h5`` (full model save); weights checked shape by shape.

    Args:
        path: the ``.h5`` file written by TF-Keras 2 ``model.save``.
        normalize_inside: insert ``(x - 127.5) / 128`` after the input (the seed normalised outside the model).

    Raises:
        DataError: naming the file and layer, for anything that cannot be translated exactly.
    """
    config, weights = _read(path)
    notes = []
    model_config = _translate_layer(config, path, notes)
    if model_config["class_name"] not in NESTED_MODELS:
        raise DataError(f"{path}: top-level object is {model_config['class_name']!r}, not a model")
    if model_config["class_name"] != "Sequential":
        for key in ("input_layers", "output_layers"):  # one tensor, not a one-element list (Keras 3's structure)
            if len(model_config["config"][key]) == 1:
                model_config["config"][key] = model_config["config"][key][0]
    if normalize_inside:
        if model_config["class_name"] == "Sequential":
            raise DataError(f"{path}: Sequential seed models are not supported with normalize_inside")
        _insert_normalize(model_config["config"])
    for note in notes:
        warnings.warn(f"{path}: {note}", stacklevel=2)
    try:
        model = keras.saving.deserialize_keras_object(
            model_config,
            custom_objects={"SeedTFOp": SeedTFOp, "NormDense": NormDense, "Functional": keras.Model},
        )
    except Exception as error:
        raise DataError(f"{path}: the model config could not be rebuilt in Keras 3: {error}") from error
    _assign_weights(model, _weights_by_layer(weights), path)
    return model


def _assign_weights(model, by_layer, path):
    for layer in model._flatten_layers(include_self=False):
        if not layer.weights or isinstance(layer, keras.Model):
            continue
        values = by_layer.get(layer.name)
        if values is None:
            raise DataError(f"{path}: no weights stored for layer {layer.name!r}")
        if len(values) != len(layer.weights):
            raise DataError(f"{path}: layer {layer.name!r} stores {len(values)} weights, the model needs {len(layer.weights)}")
        for variable, value in zip(layer.weights, values):
            if tuple(variable.shape) != value.shape:
                raise DataError(
                    f"{path}: layer {layer.name!r} weight {variable.path}: stored shape {value.shape}, "
                    f"model shape {tuple(variable.shape)}"
                )
            variable.assign(value.astype(variable.dtype))


def convert_seed_h5(src, dst, normalize_inside=True):
    """Load a seed ``.h5`` and save it as a Keras 3 ``.keras`` file; returns the model."""
    if not str(dst).endswith(".keras"):
        raise DataError(f"{dst}: the output of a converted seed model must be a .keras file")
    model = load_seed_h5(src, normalize_inside=normalize_inside)
    with atomic_path(dst, "save the model") as tmp:
        model.save(tmp)
    return model

"""One loader for every model file the project meets: our ``.keras`` files, the seed system's ``.h5`` and Keras 3
``.h5`` files (the full model ``Train`` saves for a seed ``save_path``).

``keras.saving.load_model`` only finds custom layers whose modules were imported; this loader imports every
module of the model layers that registers one (ViT blocks, MHSA, stochastic depth, heads, augmentation, seed
ops) first, so a ``.keras`` file loads whatever backbone it holds. Models load without their training
configuration (``compile=False``): the project's optimizers and schedules belong to the training layer.

Example:
    >>> import keras_insightface as kif
    >>> from keras_insightface.saving import load_model
    >>> path = getfixture("tmp_path") / "m.keras"
    >>> kif.buildin_models("r18_tiny", emb_shape=32).save(path)
    >>> load_model(path).output_shape
    (None, 32)
"""

import importlib
import os
import zipfile

from keras_insightface.atomic import atomic_path
from keras_insightface.errors import DataError
from keras_insightface.file_weights import weights_from_file

REGISTERING_MODULES = (
    "keras_insightface.backbones.vit",
    "keras_insightface.layers.mhsa",
    "keras_insightface.layers.stochastic_depth",
    "keras_insightface.heads.norm_dense",
    "keras_insightface.heads.vpl",
    "keras_insightface.heads.margin",
    "keras_insightface.losses.cross_entropy",
    "keras_insightface.data.augment",
    "keras_insightface.data.mixup",
    "keras_insightface.seed_h5",
)


def load_model(path, compile=False):
    """A ``.keras`` model (ours) or a seed ``.h5`` (translated, normalisation inside) as a Keras 3 model."""
    import keras

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: model file does not exist")
    for module in REGISTERING_MODULES:
        importlib.import_module(module)
    if path.endswith(".h5") and not _written_by_keras3(path):
        from keras_insightface.seed_h5 import load_seed_h5

        with weights_from_file():
            return load_seed_h5(path)
    if path.endswith(".h5"):  # a Keras 3 HDF5 file (the full model a Train of a .h5 save_path writes)
        try:
            with weights_from_file():
                return keras.saving.load_model(path, compile=compile)
        except (ValueError, OSError, KeyError, TypeError) as error:
            raise DataError(f"{path}: could not load the Keras 3 HDF5 model: {error}") from error
    if not path.endswith(".keras"):
        raise DataError(f"{path}: unknown model format; expected a .keras file or a seed .h5 file")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found" of a truncated or foreign file
        raise DataError(f"{path}: not a .keras model (not a zip archive: truncated, or another format)")
    try:
        with weights_from_file():  # the file's weights replace the initial values: no random initialiser is run
            return keras.saving.load_model(path, compile=compile)
    except (ValueError, OSError, KeyError) as error:
        raise DataError(f"{path}: could not load the model: {error}") from error


def _written_by_keras3(path):
    """Whether an ``.h5`` file was written by Keras 3 (its ``keras_version`` attribute), not by TF-Keras 2."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            version = file.attrs.get("keras_version", b"")
    except OSError as error:
        raise DataError(f"{path}: not an HDF5 file ({error})") from None
    version = version.decode() if isinstance(version, bytes) else str(version)
    return version.startswith("3.")


def save_model(model, path):
    """``model.save(path)`` through a temporary file beside ``path`` and a rename: a failed write (a full disk)
    leaves the previous file at ``path`` intact and raises a ``DataError`` naming it."""
    with atomic_path(path, "save the model") as tmp:
        model.save(tmp)
    return os.fspath(path)


def copy_weights_by_name(source, target, where="pretrained"):
    """Copy the weights of every layer of ``source`` into the layer of ``target`` with the same name and weight
    shapes (nested models are searched too); returns ``(copied, skipped)`` layer names. An empty match is an
    error naming ``where``: nothing of the file fits the model."""
    def layers(model):
        for layer in model.layers:
            yield from layers(layer) if hasattr(layer, "layers") and layer.layers else [layer]

    by_name = {layer.name: layer for layer in layers(source) if layer.weights}
    copied, skipped = [], []
    for layer in layers(target):
        if not layer.weights:
            continue
        other = by_name.get(layer.name)
        shapes = [tuple(w.shape) for w in layer.weights]
        if other is None or [tuple(w.shape) for w in other.weights] != shapes:
            skipped.append(layer.name)
            continue
        layer.set_weights(other.get_weights())
        copied.append(layer.name)
    if not copied:
        raise DataError(f"{where}: no layer matches the model by name and weight shapes")
    return copied, skipped


def embedding_at(model, index, where="model"):
    """``(basic model, classifier layer or None)`` of a full model whose embedding is the output of layer number
    ``index`` (the seed's ``Train(basic_model=-2, model=...)``); the classifier is its last layer when that holds a
    kernel."""
    import keras

    if not -len(model.layers) <= index < len(model.layers):
        raise DataError(f"{where}: basic_model={index} is not a layer index of its {len(model.layers)} layers")
    layer = model.layers[index]
    basic = keras.Model(model.inputs[0], layer.output, name=model.name + "_basic")
    head = model.layers[-1] if layer is not model.layers[-1] else None
    return basic, (head if getattr(head, "kernel", None) is not None else None)


def split_full_model(model, where="model"):
    """``(basic model, classifier layer or None)`` of a full training model saved by the seed or built by a user:
    the basic model ends at the layer named ``embedding`` (flat, as the seed's ``.h5``, or a nested model), the
    classifier is the last layer holding a kernel after it."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.layers and layer.layers[-1].name == "embedding":
            basic = layer
            break
    else:
        names = [layer.name for layer in model.layers]
        if "embedding" not in names:
            raise DataError(f"{where}: no layer named 'embedding' ends a basic model inside it (layers: {names[-5:]})")
        basic = keras.Model(model.inputs[0], model.get_layer("embedding").output, name=model.name + "_basic")
    after = model.layers[model.layers.index(basic) + 1:] if basic in model.layers else \
        model.layers[[layer.name for layer in model.layers].index("embedding") + 1:]
    heads = [layer for layer in after if getattr(layer, "kernel", None) is not None]
    return basic, (heads[-1] if heads else None)

"""One loader for every model file the project meets: our ``.keras`` files and the seed system's ``.h5``.

``keras.saving.load_model`` only finds custom layers whose modules were imported; this loader imports every
module that registers one (ViT blocks, MHSA, stochastic depth, heads, seed ops) first, so a ``.keras`` file
loads whatever backbone it holds.

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

from keras_insightface.errors import DataError

REGISTERING_MODULES = (
    "keras_insightface.backbones.vit",
    "keras_insightface.layers.mhsa",
    "keras_insightface.layers.stochastic_depth",
    "keras_insightface.heads.norm_dense",
    "keras_insightface.heads.margin",
    "keras_insightface.losses.cross_entropy",
    "keras_insightface.training.optimizers",
    "keras_insightface.training.schedules",
    "keras_insightface.data.augment",
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
    if path.endswith(".h5"):
        from keras_insightface.seed_h5 import load_seed_h5

        return load_seed_h5(path)
    if not path.endswith(".keras"):
        raise DataError(f"{path}: unknown model format; expected a .keras file or a seed .h5 file")
    try:
        return keras.saving.load_model(path, compile=compile)
    except (ValueError, OSError, KeyError) as error:
        raise DataError(f"{path}: could not load the model: {error}") from error

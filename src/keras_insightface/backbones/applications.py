"""Backbones from ``keras.applications`` by name, as the seed system builds them: without the classifier top,
with their ImageNet weights on request, and with the registry's BatchNormalization settings.

The input is the model's normalised image (``(x - 127.5) / 128``), so a model's own input rescaling is left
out where Keras lets it (``include_preprocessing=False``). ``EfficientNetB0`` ... ``B7`` always rescale
(``1 / 255`` and a Normalization that holds the ImageNet statistics with its weights): they get the pixels
back (``x * 128 + 127.5``), so their ImageNet weights see what they were trained on. ``weights="imagenet"``
downloads Keras's file; when that fails (offline), the error says to pass ``weights=None``.

Example:
    >>> import keras
    >>> from keras_insightface.backbones.applications import application_name, keras_application
    >>> application_name("densenet121")
    'DenseNet121'
    >>> keras_application(keras.Input((112, 112, 3)), "MobileNet", bn_momentum=0.9).shape
    (None, 3, 3, 1024)
"""

import inspect

import keras

from keras_insightface.errors import DataError
from keras_insightface.layers.conv_blocks import set_batch_norm

WEIGHTS = (None, "imagenet")
RESCALING_ITSELF = tuple(f"EfficientNetB{index}" for index in range(8))  # no include_preprocessing option


def application_names():
    """``{lower-case name: name}`` of every model constructor in ``keras.applications``."""
    return {
        name.lower(): name
        for name in dir(keras.applications)
        if name[:1].isupper() and callable(getattr(keras.applications, name))
    }


def application_name(name):
    """The ``keras.applications`` constructor named ``name`` in any case (``densenet121`` -> ``DenseNet121``),
    or ``None``."""
    return application_names().get(name.lower())


def _download_failed(error):
    """Keras's ``get_file`` raises a bare ``Exception("URL fetch failure on ...")`` when a download fails."""
    return isinstance(error, OSError) or "URL fetch failure" in str(error)


def imagenet_application(model_name, build):
    """``build()`` (a ``keras.applications`` call with ``weights="imagenet"``) with a failed download turned into
    an error that says what to do."""
    try:
        return build()
    except Exception as error:
        if not _download_failed(error):
            raise
        raise DataError(
            f"{model_name}: could not download its ImageNet weights ({error}); pass weights=None to build it "
            "without them (offline), or a weights file path"
        ) from error


def keras_application(inputs, model_name, weights=None, bn_momentum=None, bn_epsilon=None, **kwargs):
    """The last feature map of ``keras.applications.<model_name>`` applied to ``inputs``.

    ``weights``: ``None`` or ``"imagenet"`` (a weights file is loaded by ``buildin_models``).
    ``bn_momentum`` / ``bn_epsilon``: set on every BatchNormalization (``None`` keeps Keras's value).
    ``kwargs`` go to the constructor (``alpha``, ``depth_multiplier``, ...).
    """
    constructor = getattr(keras.applications, model_name, None)
    if constructor is None or application_name(model_name) != model_name:
        raise ValueError(f"keras.applications has no model {model_name!r}")
    if weights not in WEIGHTS:
        raise ValueError(f"{model_name}: weights must be None or 'imagenet' here, received weights={weights!r}")
    if "include_preprocessing" in inspect.signature(constructor).parameters:
        kwargs.setdefault("include_preprocessing", False)
    x = inputs
    if model_name in RESCALING_ITSELF:
        x = keras.layers.Rescaling(128.0, offset=127.5, name=model_name.lower() + "_pixels")(inputs)

    def build():
        return constructor(input_tensor=x, include_top=False, weights=weights, **kwargs)

    model = imagenet_application(model_name, build) if weights == "imagenet" else build()
    set_batch_norm(model, bn_momentum, bn_epsilon)
    return model.output

"""A float32 copy of a mixed-precision basic model, for export.

Models trained under ``mixed_bfloat16`` / ``mixed_float16`` keep that policy in every layer's config, so they
would be exported (and verified) computing in 16 bits. Export wants the float32 function: ``fp16`` is a
separate, explicit choice of the exporter. The copy has the same layers and weights with ``dtype="float32"``.

Example:
    >>> import keras
    >>> from keras_insightface.export.precision import as_float32
    >>> inputs = keras.Input((4,))
    >>> mixed = keras.Model(inputs, keras.layers.Dense(2, dtype="mixed_bfloat16")(inputs))
    >>> as_float32(mixed).layers[-1].compute_dtype, as_float32(mixed).get_weights()[0].shape
    ('float32', (4, 2))
"""

import keras


def is_float32(model):
    """Every layer of ``model`` (nested ones too) computes in float32."""
    return all(layer.compute_dtype == "float32" for layer in model._flatten_layers(include_self=False))


def as_float32(model):
    """``model`` when it computes in float32 everywhere, else a float32 copy with its weights."""
    if is_float32(model):
        return model
    pairs = []

    def clone(layer):
        config = layer.get_config()
        config["dtype"] = "float32"
        config.update({key: "zeros" for key in config if key.endswith("_initializer")})  # weights are copied after
        copy = layer.__class__.from_config(config)
        pairs.append((layer, copy))
        return copy

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for layer, new in pairs:
        if getattr(layer, "weights", None):
            new.set_weights(layer.get_weights())
    return copy

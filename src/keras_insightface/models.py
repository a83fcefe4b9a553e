"""``buildin_models``: backbone + embedding head, the "basic model" that maps RGB faces to embeddings.

Normalisation ``(x - 127.5) / 128`` is the model's first layer, so exported models take raw RGB (uint8 or
float 0..255). The output is a float32 tensor named ``embedding`` even under mixed precision.

Embedding heads (layer sequences as the seed system):
    - ``GDC``: depthwise conv over the whole map -> BN -> dropout -> 1x1 conv to ``emb_shape`` -> flatten
    - ``E``:   BN -> dropout -> flatten -> dense
    - ``GAP``: BN -> global average pool -> dropout -> dense
    - ``F``:   dropout -> flatten -> dense
each followed by the ``pre_embedding`` BN (``scale=False`` reproduces MXNet's ``fix_gamma``).

Defaults are the seed's: its keywords in its order, ReLU IR-ResNets, each backbone's own BatchNormalization
settings and Keras's 0.99 / 1e-3 in the head, no dropout, ImageNet weights for ``keras.applications`` models.
``preset="arcface_torch"`` gives arcface_torch's IR-ResNet (PReLU, every BN at momentum 0.9 / epsilon 1e-5):
the models this project built before it took the seed's defaults.

Example:
    >>> from keras_insightface import buildin_models
    >>> basic = buildin_models("r18_tiny", output_layer="E", emb_shape=256)
    >>> basic.layers[-1].name, basic.output_shape
    ('embedding', (None, 256))
    >>> basic.get_layer("stem_relu").name, basic.get_layer("pre_embedding").momentum
    ('stem_relu', 0.99)
"""

import functools
import inspect
import os
import types

import keras

from keras_insightface.backbones import BACKBONES, get_backbone
from keras_insightface.backbones.applications import application_name, keras_application
from keras_insightface.backbones.iresnet import iresnet
from keras_insightface.errors import DataError
from keras_insightface.layers.conv_blocks import apply_activation, check_activation, set_batch_norm

OUTPUT_LAYERS = ("GDC", "E", "GAP", "F")


def _embedding_head(x, output_layer, emb_shape, dropout, bn_momentum, bn_epsilon, use_bias, scale, fold_pre_embedding):
    def bn(y, name, **kwargs):
        return keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, name=name, **kwargs)(y)

    def drop(y, name):
        return keras.layers.Dropout(dropout, name=name)(y) if 0 < dropout < 1 else y

    init = "glorot_normal"
    if output_layer == "GDC":
        x = keras.layers.DepthwiseConv2D(tuple(x.shape[1:3]), use_bias=False, name="GDC_dw")(x)
        x = drop(bn(x, "GDC_batchnorm"), "GDC_dropout")
        x = keras.layers.Conv2D(emb_shape, 1, use_bias=use_bias, kernel_initializer=init, name="GDC_conv")(x)
        if fold_pre_embedding:  # BN on the conv output folds into the conv in TFLite / ONNX
            x = bn(x, "pre_embedding", scale=scale)
        return keras.layers.Flatten(name="GDC_flatten")(x)
    if output_layer == "E":
        x = drop(bn(x, "E_batchnorm"), "E_dropout")
        x = keras.layers.Flatten(name="E_flatten")(x)
        return keras.layers.Dense(emb_shape, use_bias=use_bias, kernel_initializer=init, name="E_dense")(x)
    if output_layer == "GAP":
        x = keras.layers.GlobalAveragePooling2D(name="GAP_pool")(bn(x, "GAP_batchnorm"))
        x = drop(x, "GAP_dropout")
        return keras.layers.Dense(emb_shape, use_bias=use_bias, kernel_initializer=init, name="GAP_dense")(x)
    x = keras.layers.Flatten(name="F_flatten")(drop(x, "F_dropout"))
    return keras.layers.Dense(emb_shape, use_bias=use_bias, kernel_initializer=init, name="F_dense")(x)


HEAD_BN_MOMENTUM, HEAD_BN_EPSILON = 0.99, 1e-3  # Keras's defaults: the seed's head BatchNormalization
# Named configurations; each value is the default of a keyword the call leaves unset. ``model``: keywords of
# buildin_models; ``iresnet``: options of the IR-ResNet backbones (r18 ... r200, se_r*, r18_tiny).
PRESETS = types.MappingProxyType({
    "arcface_torch": types.MappingProxyType({
        "model": types.MappingProxyType({"bn_momentum": 0.9, "bn_epsilon": 1e-5}),
        "iresnet": types.MappingProxyType({"activation": "prelu", "kernel_initializer": "glorot_uniform"}),
    }),
})
FAMILIES = types.MappingProxyType({
    "iresnet": "IR-ResNet (insightface / the seed's resnet.py)",
    "mobilenet": "MobileNet",
    "efficientnet": "EfficientNet (keras.applications)",
    "efficientnet_extra": "EfficientNet (keras_efficientnet_v2 layouts)",
    "se_resnext": "SE-ResNeXt",
    "applications": "keras.applications",
    "resnetv2": "ResNetV2 (keras.applications layout)",
})


def print_buildin_models():
    """Print the backbone names ``buildin_models`` accepts, by family, as the seed's ``print_buildin_models``."""
    families = {}
    for name, builder in BACKBONES.items():  # registry order: r18, r34, r50, ...
        module = getattr(builder, "func", builder).__module__.rsplit(".", 1)[-1]
        families.setdefault(FAMILIES.get(module, module), []).append(name)
    lines = [">>>> buildin_models"] + [f"{family}: {', '.join(names)}" for family, names in families.items()]
    lines.append("Or other names from keras.applications like DenseNet121 / InceptionV3 / NASNetMobile / VGG19.")
    print("\n".join("    " + line for line in lines))


def backbone_builder(name):
    """The builder of backbone ``name``: a registered name (case-insensitive) or any ``keras.applications`` model
    (``DenseNet121``, ``inceptionv3``, ...)."""
    try:
        return get_backbone(name)
    except ValueError as error:
        model_name = application_name(name)
        if model_name is None:
            raise ValueError(f"{error}; or a keras.applications model name (DenseNet121, InceptionV3, ...)") from None
        return functools.partial(keras_application, model_name=model_name)


def _takes(builder, keyword):
    return keyword in inspect.signature(builder).parameters


def _is_iresnet(builder):
    return getattr(builder, "func", builder) is iresnet


def _weights_file(weights):
    """``weights`` as a file path, or ``None`` for ``None`` / ``"imagenet"``; anything else is an error."""
    if weights is None or weights == "imagenet":
        return None
    if isinstance(weights, (str, os.PathLike)):
        return os.fspath(weights)
    raise ValueError(f"weights must be None, 'imagenet' or a weights file path, received weights={weights!r}")


def _load_backbone_weights(backbone, path, name):
    """Load a weights file (``.weights.h5`` of the same backbone, a Keras 2 ``.h5`` by layer order, a
    ``.keras``) into the backbone part of the model."""
    if not os.path.isfile(path):
        raise DataError(f"{path}: weights file does not exist")
    try:
        backbone.load_weights(path)
    except (ValueError, OSError, KeyError) as error:  # Keras's message can carry whole arrays: its start says it
        message = " ".join(str(error).split())
        message = message if len(message) <= 300 else message[:300] + " ..."
        raise DataError(f"{path}: could not load these weights into backbone {name!r}: {message}") from error


def _pointwise_conv(x, filters, activation, bn_momentum, bn_epsilon):
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name="pw_conv")(x)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, name="pw_bn")(x)
    return apply_activation(x, "pw", activation)


def buildin_models(
    stem_model,
    dropout=1,
    emb_shape=512,
    input_shape=(112, 112, 3),
    output_layer="GDC",
    bn_momentum=None,
    bn_epsilon=None,
    add_pointwise_conv=False,
    pointwise_conv_act="relu",
    use_bias=False,
    scale=True,
    weights="imagenet",
    *,
    preset=None,
    fold_pre_embedding=False,
    name=None,
    **backbone_kwargs,
):
    """Build the basic (embedding) model; the seed's keywords, in its order, with its defaults.

    Args:
        stem_model: a backbone name (``print_buildin_models()`` lists them; any ``keras.applications`` model
            name too, in any case: ``DenseNet121``, ``resnet50``...) or a ``keras.Model`` whose output is a
            feature map; a model gets the same normalisation in front.
        dropout: dropout rate inside the head, used only when ``0 < dropout < 1`` (the default 1: none).
        emb_shape: embedding size.
        input_shape: image size, ``(112, 112, 3)``.
        output_layer: embedding head, one of ``GDC``, ``E``, ``GAP``, ``F``.
        bn_momentum, bn_epsilon: set on every BatchNormalization of backbone and head when given. Unset, each
            backbone keeps its own (the seed's: 0.9 / 1e-5 in IR-ResNets, Keras's in ``keras.applications``
            models) and the head uses Keras's 0.99 / 1e-3, as the seed builds them. Unlike the seed, an explicit
            0.99 / 1e-3 reaches the backbone too. A backbone without BatchNormalization (ViT) raises.
        add_pointwise_conv: a 1x1 conv + BN + activation before the head: ``True`` = 512 channels, ``-1`` = half
            the backbone's channels (the seed's option; smaller than ``E`` on a wide map).
        pointwise_conv_act: ``relu``, ``prelu`` or any Keras activation for that conv.
        use_bias: bias in the head's last dense/conv.
        scale: learn gamma of the ``pre_embedding`` BN (``False`` = MXNet ``fix_gamma``).
        weights: ``"imagenet"`` loads Keras's ImageNet weights into ``keras.applications`` backbones (a
            download; offline it is an error that says to pass ``None``); backbones built here have none and
            ignore it. ``None``: random initialisation. A file path: weights for the backbone part (a
            ``.weights.h5`` saved from the same backbone, or a Keras 2 ``.h5`` loaded by layer order).
        preset: ``"arcface_torch"``: every BatchNormalization at momentum 0.9, epsilon 1e-5 (PyTorch's
            defaults) and, in IR-ResNets, PReLU with Keras's ``glorot_uniform`` kernels (the seed draws He fan-out
            ones): arcface_torch's iresnet, and the model this project built by default before it took the
            seed's. Keywords the call sets win over the preset's.
        fold_pre_embedding: with ``GDC``, put the ``pre_embedding`` BN right after the 1x1 conv (before the
            flatten) so TFLite / ONNX fold it into the conv.
        name: the model's name (default: ``stem_model``'s).
        backbone_kwargs: options of a named backbone, e.g. ``buildin_models("r50", activation="prelu")`` (any
            Keras activation name, or ``prelu``), ``buildin_models("ghostnet", strides=1)``.
    """
    if output_layer not in OUTPUT_LAYERS:
        raise ValueError(f"output_layer must be one of {OUTPUT_LAYERS}, received output_layer={output_layer!r}")
    if emb_shape < 1:
        raise ValueError(f"emb_shape must be positive, received emb_shape={emb_shape}")
    if not 0 <= dropout <= 1:
        raise ValueError(f"dropout must be in [0, 1] (0 and 1: none), received dropout={dropout}")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be None or one of {sorted(PRESETS)}, received preset={preset!r}")
    if fold_pre_embedding and output_layer != "GDC":
        raise ValueError(f"fold_pre_embedding needs output_layer='GDC', received output_layer={output_layer!r}")
    check_activation(pointwise_conv_act, "pointwise_conv_act")
    weights_file = _weights_file(weights)
    explicit_bn = bn_momentum is not None or bn_epsilon is not None
    preset_options = PRESETS[preset] if preset else {}
    model_preset = preset_options.get("model", {})
    bn_momentum = model_preset.get("bn_momentum") if bn_momentum is None else bn_momentum
    bn_epsilon = model_preset.get("bn_epsilon") if bn_epsilon is None else bn_epsilon

    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1 / 128, offset=-127.5 / 128, name="normalize")(inputs)
    if isinstance(stem_model, str):
        builder = backbone_builder(stem_model)
        options = {**(preset_options.get("iresnet", {}) if _is_iresnet(builder) else {}), **backbone_kwargs}
        if _takes(builder, "weights"):  # keras.applications models (and ResNetV2) fetch ImageNet weights
            options["weights"] = None if weights_file else weights
        features = builder(x, **options)
        name = name or (stem_model.lower() if stem_model.lower() in BACKBONES else stem_model)  # "R50" is r50
    elif isinstance(stem_model, keras.Model):
        if backbone_kwargs:
            raise ValueError(f"Backbone options apply to named backbones only, received {sorted(backbone_kwargs)}")
        if bn_momentum is not None or bn_epsilon is not None:  # a copy: the caller's model keeps its settings
            stem_weights, stem_model = stem_model.get_weights(), keras.models.clone_model(stem_model)
            stem_model.set_weights(stem_weights)
        features = stem_model(x)
        name = name or stem_model.name
    else:
        raise ValueError(f"stem_model must be a backbone name or a keras.Model, received {type(stem_model).__name__}")
    if len(features.shape) != 4:
        raise ValueError(f"The backbone must output a 4-D feature map, received shape {features.shape}")
    backbone = keras.Model(inputs, features)
    if set_batch_norm(backbone, bn_momentum, bn_epsilon) == 0 and explicit_bn:
        raise ValueError(
            f"Backbone {name!r} has no BatchNormalization layer: bn_momentum / bn_epsilon do not apply to it, "
            f"received bn_momentum={bn_momentum}, bn_epsilon={bn_epsilon}"
        )
    if weights_file:
        _load_backbone_weights(backbone, weights_file, name)

    head_momentum = HEAD_BN_MOMENTUM if bn_momentum is None else bn_momentum
    head_epsilon = HEAD_BN_EPSILON if bn_epsilon is None else bn_epsilon
    if add_pointwise_conv:
        filters = features.shape[-1] // 2 if add_pointwise_conv == -1 else 512
        features = _pointwise_conv(features, filters, pointwise_conv_act, head_momentum, head_epsilon)
    x = _embedding_head(
        features, output_layer, emb_shape, dropout, head_momentum, head_epsilon, use_bias, scale, fold_pre_embedding
    )
    if not fold_pre_embedding:
        x = keras.layers.BatchNormalization(
            momentum=head_momentum, epsilon=head_epsilon, scale=scale, name="pre_embedding"
        )(x)
    embedding = keras.layers.Activation("linear", dtype="float32", name="embedding")(x)
    return keras.Model(inputs, embedding, name=name)


# The seed's ``models`` module also held its classifier layers and model surgery: the same names here.
from keras_insightface.heads.norm_dense import NormDense  # noqa: E402
from keras_insightface.heads.vpl import NormDenseVPL  # noqa: E402
from keras_insightface.surgery import (  # noqa: E402
    add_l2_regularizer_2_model, convert_mixed_float16_to_float32, convert_to_mixed_float16, replace_ReLU_with_PReLU,
    replace_add_with_stochastic_depth, replace_stochastic_depth_with_add,
)

__all__ = [
    "buildin_models", "print_buildin_models", "NormDense", "NormDenseVPL", "add_l2_regularizer_2_model",
    "convert_mixed_float16_to_float32", "convert_to_mixed_float16", "replace_ReLU_with_PReLU", "replace_add_with_stochastic_depth",
    "replace_stochastic_depth_with_add",
]

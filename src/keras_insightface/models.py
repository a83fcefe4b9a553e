"""``buildin_models``: backbone + embedding head, the "basic model" that maps RGB faces to embeddings.

Normalisation ``(x - 127.5) / 128`` is the model's first layer, so exported models take raw RGB (uint8 or
float 0..255). The output is a float32 tensor named ``embedding`` even under mixed precision.

Embedding heads (layer sequences as the seed system):
    - ``GDC``: depthwise conv over the whole map -> BN -> dropout -> 1x1 conv to ``emb_shape`` -> flatten
    - ``E``:   BN -> dropout -> flatten -> dense
    - ``GAP``: BN -> global average pool -> dropout -> dense
    - ``F``:   dropout -> flatten -> dense
each followed by the ``pre_embedding`` BN (``scale=False`` reproduces MXNet's ``fix_gamma``).

Example:
    >>> from keras_insightface import buildin_models
    >>> basic = buildin_models("r18_tiny", output_layer="E", emb_shape=256)
    >>> basic.layers[-1].name, basic.output_shape
    ('embedding', (None, 256))
"""

import keras

from keras_insightface.backbones import get_backbone
from keras_insightface.layers.conv_blocks import apply_activation

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


def _pointwise_conv(x, filters, activation, bn_momentum, bn_epsilon):
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name="pw_conv")(x)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, name="pw_bn")(x)
    return apply_activation(x, "pw", activation)


def buildin_models(
    stem_model,
    output_layer="GDC",
    emb_shape=512,
    dropout=0,
    bn_momentum=0.9,
    bn_epsilon=1e-5,
    use_bias=False,
    scale=True,
    add_pointwise_conv=False,
    pointwise_conv_act="relu",
    fold_pre_embedding=False,
    input_shape=(112, 112, 3),
    name=None,
    **backbone_kwargs,
):
    """Build the basic (embedding) model.

    Args:
        stem_model: a backbone name (``r18``, ``r34``, ``r50``, ``r100``, ``r200``, ``r18_tiny``) or a
            ``keras.Model`` whose output is a feature map; a model gets the same normalisation in front.
        output_layer: embedding head, one of ``GDC``, ``E``, ``GAP``, ``F``.
        emb_shape: embedding size.
        dropout: dropout rate inside the head (0 disables it).
        bn_momentum, bn_epsilon: for every BatchNormalization of backbone and head (MXNet: 0.9 / 2e-5).
        use_bias: bias in the head's last dense/conv.
        scale: learn gamma of the ``pre_embedding`` BN (``False`` = MXNet ``fix_gamma``).
        add_pointwise_conv: a 1x1 conv + BN + activation before the head: ``True`` = 512 channels, ``-1`` = half
            the backbone's channels (the seed's option; smaller than ``E`` on a wide map).
        pointwise_conv_act: ``relu``, ``prelu`` or any Keras activation for that conv.
        fold_pre_embedding: with ``GDC``, put the ``pre_embedding`` BN right after the 1x1 conv (before the
            flatten) so TFLite / ONNX fold it into the conv.
        backbone_kwargs: options of a named backbone, e.g. ``buildin_models("ghostnet", strides=1,
            activation="prelu")``.
    """
    if output_layer not in OUTPUT_LAYERS:
        raise ValueError(f"output_layer must be one of {OUTPUT_LAYERS}, received output_layer={output_layer!r}")
    if emb_shape < 1:
        raise ValueError(f"emb_shape must be positive, received emb_shape={emb_shape}")
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Rescaling(1 / 128, offset=-127.5 / 128, name="normalize")(inputs)
    if isinstance(stem_model, str):
        features = get_backbone(stem_model)(x, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, **backbone_kwargs)
        name = name or stem_model
    elif isinstance(stem_model, keras.Model):
        if backbone_kwargs:
            raise ValueError(f"Backbone options apply to named backbones only, received {sorted(backbone_kwargs)}")
        features = stem_model(x)
        name = name or stem_model.name
    else:
        raise ValueError(f"stem_model must be a backbone name or a keras.Model, received {type(stem_model).__name__}")
    if len(features.shape) != 4:
        raise ValueError(f"The backbone must output a 4-D feature map, received shape {features.shape}")
    if fold_pre_embedding and output_layer != "GDC":
        raise ValueError(f"fold_pre_embedding needs output_layer='GDC', received output_layer={output_layer!r}")
    if add_pointwise_conv:
        filters = features.shape[-1] // 2 if add_pointwise_conv == -1 else 512
        features = _pointwise_conv(features, filters, pointwise_conv_act, bn_momentum, bn_epsilon)
    x = _embedding_head(
        features, output_layer, emb_shape, dropout, bn_momentum, bn_epsilon, use_bias, scale, fold_pre_embedding
    )
    if not fold_pre_embedding:
        x = keras.layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, scale=scale, name="pre_embedding")(x)
    embedding = keras.layers.Activation("linear", dtype="float32", name="embedding")(x)
    return keras.Model(inputs, embedding, name=name)

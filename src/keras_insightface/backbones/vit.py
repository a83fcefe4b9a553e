"""Face ViT: insightface arcface_torch's ``vit_t`` / ``vit_s`` / ``vit_b`` as a Keras backbone.

Facts from insightface ``recognition/arcface_torch/backbones/vit.py`` and ``backbones/__init__.py``:

* Patch embedding: a ``patch_size`` x ``patch_size`` convolution with stride ``patch_size`` (with bias) and
  ``patch_size=9``; on 112x112 faces this gives a 12x12 grid of 144 tokens (the last 4 pixel rows and
  columns are never seen). No class token. A learned position embedding of shape ``(1, 144, embed_dim)``
  (truncated normal, std 0.02) is added.
* Pre-norm blocks: ``x + DropPath(Attention(LN(x)))`` then ``x + DropPath(MLP(LN(x)))``. LayerNorm uses
  epsilon 1e-5 (PyTorch default). Attention: one ``qkv`` Linear *without* bias, softmax(q k^T / sqrt(d_head)),
  an output ``proj`` Linear with bias. MLP: Linear(embed_dim -> mlp_ratio * embed_dim) -> activation ->
  Linear back. Linear kernels are initialised with a truncated normal of std 0.02 and zero biases.
* The MLP activation is **ReLU6**, not GELU: ``Block`` and ``Mlp`` default ``act_layer=nn.ReLU6`` and
  ``VisionTransformer`` never overrides it. ``mlp_activation`` selects another (``"gelu"`` for a standard ViT).
* Stochastic depth rates grow linearly over the blocks, ``linspace(0, drop_path_rate, depth)``.
* Training-time token masking (``mask_ratio``, 0.1 for vit_t/s/b): each sample keeps a random
  ``int(144 * (1 - mask_ratio))`` tokens through the blocks; after the final LayerNorm the dropped positions
  are filled with a learned ``mask_token`` (normal, std 0.02). Inference sees all tokens.
* Configurations: ``vit_t`` embed 256, depth 12, 8 heads; ``vit_s`` embed 512, depth 12, 8 heads; ``vit_b``
  embed 512, depth 24, 8 heads; all with patch 9, mlp_ratio 4, drop_path_rate 0.1, mask_ratio 0.1 (vit_b also
  uses gradient checkpointing, a memory trade-off that does not change the model). The WebFace42M variants
  ``*_dp005_mask0`` are ``drop_path_rate=0.05, mask_ratio=0.0`` (``mask_ratio=0.05`` for vit_b).

Differences from the reference, all without effect on the function computed:

* Token masking is implemented as a key mask inside attention instead of removing the dropped tokens: kept
  tokens attend to kept tokens only, exactly as in the reference, and the dropped positions are overwritten
  by the mask token after the final norm, so the outputs match; training pays ~11 % more attention/MLP work.
* The final LayerNorm output is returned as a ``(B, 12, 12, embed_dim)`` map (token order = row-major patch
  order, as the reference flattens it) so this project's heads apply. The reference's own head (flatten ->
  Linear(144 * embed_dim -> embed_dim, no bias) -> BN -> Linear -> BN) corresponds to the ``F`` head.
* There is no BatchNormalization: a ``bn_momentum`` / ``bn_epsilon`` is an error here and in
  ``buildin_models("vit_t", bn_momentum=...)`` (a preset's values reach only the embedding head's BNs).

Example:
    >>> import keras
    >>> from keras_insightface.backbones.vit import vit
    >>> inputs = keras.Input((112, 112, 3))
    >>> vit(inputs, embed_dim=32, depth=2, num_heads=4).shape
    (None, 12, 12, 32)
"""

import keras
from keras import ops

from keras_insightface.layers.stochastic_depth import StochasticDepth

LAYER_NORM_EPSILON = 1e-5


def _dense_initializer():
    return keras.initializers.TruncatedNormal(stddev=0.02)


@keras.saving.register_keras_serializable(package="keras_insightface")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding of shape ``(1, num_tokens, dim)`` to ``(B, num_tokens, dim)`` tokens.

    Example:
        >>> import numpy as np
        >>> PositionEmbedding()(np.zeros((2, 144, 8), "float32")).shape
        (2, 144, 8)
    """

    def __init__(self, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer or _dense_initializer())

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None or input_shape[2] is None:
            raise ValueError(f"PositionEmbedding needs static (batch, tokens, dim) inputs, received {input_shape}")
        self.embedding = self.add_weight(
            name="embedding", shape=(1, input_shape[1], input_shape[2]), initializer=self.initializer
        )

    def call(self, inputs):
        return inputs + ops.cast(self.embedding, inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(initializer=keras.initializers.serialize(self.initializer))
        return config


@keras.saving.register_keras_serializable(package="keras_insightface")
class ViTTokenMask(keras.layers.Layer):
    """Training-time keep mask ``(B, num_tokens)`` (bool) keeping ``int(num_tokens * (1 - mask_ratio))``
    random tokens per sample; all True at inference."""

    def __init__(self, mask_ratio, seed=None, **kwargs):
        super().__init__(**kwargs)
        mask_ratio = float(mask_ratio)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"ViTTokenMask mask_ratio must be in [0, 1), received mask_ratio={mask_ratio}")
        self.mask_ratio, self.seed = mask_ratio, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, tokens, training=None):
        keep_all = ops.ones_like(tokens[:, :, 0], dtype="bool")
        if not training or self.mask_ratio == 0.0:
            return keep_all
        num_keep = int(tokens.shape[1] * (1.0 - self.mask_ratio))
        noise = keras.random.uniform(ops.shape(keep_all), seed=self.seed_generator)
        rank = ops.argsort(ops.argsort(noise, axis=1), axis=1)
        return rank < num_keep

    def get_config(self):
        config = super().get_config()
        config.update(mask_ratio=self.mask_ratio, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="keras_insightface")
class ViTAttention(keras.layers.Layer):
    """Multi-head scaled dot-product self-attention on packed ``(B, T, 3 * dim)`` q/k/v projections.

    Weightless (the ``qkv`` and ``proj`` Dense layers around it hold the weights, as in the reference).
    With ``keep_mask`` (``(B, T)`` bool) and ``training``, queries attend only to kept keys.
    """

    def __init__(self, num_heads, **kwargs):
        super().__init__(**kwargs)
        if num_heads < 1:
            raise ValueError(f"ViTAttention num_heads must be positive, received num_heads={num_heads}")
        self.num_heads = int(num_heads)

    def call(self, qkv, keep_mask=None, training=None):
        num_tokens, dim = qkv.shape[1], qkv.shape[2] // 3
        head_dim = dim // self.num_heads
        qkv = ops.reshape(qkv, (-1, num_tokens, 3, self.num_heads, head_dim))
        query, key, value = ops.unstack(qkv, 3, axis=2)  # not qkv[:, :, i]: a gather under a symbolic batch
        mask = keep_mask[:, None, None, :] if training and keep_mask is not None else None
        out = ops.dot_product_attention(query, key, value, mask=mask)
        return ops.reshape(out, (-1, num_tokens, dim))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:2], input_shape[2] // 3)

    def get_config(self):
        config = super().get_config()
        config.update(num_heads=self.num_heads)
        return config


@keras.saving.register_keras_serializable(package="keras_insightface")
class ViTMaskToken(keras.layers.Layer):
    """Holds the learned ``mask_token`` ``(1, 1, dim)``; in training it replaces the tokens whose
    ``keep_mask`` is False, at inference it passes the tokens through."""

    def build(self, input_shape):
        initializer = keras.initializers.RandomNormal(stddev=0.02)
        self.mask_token = self.add_weight(name="mask_token", shape=(1, 1, input_shape[-1]), initializer=initializer)

    def call(self, tokens, keep_mask=None, training=None):
        if not training or keep_mask is None:
            return tokens
        return ops.where(keep_mask[:, :, None], tokens, ops.cast(self.mask_token, tokens.dtype))

    def compute_output_shape(self, input_shape):
        return input_shape


def _block(x, keep_mask, num_heads, mlp_ratio, mlp_activation, drop_path, name):
    dim = x.shape[-1]
    y = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name + "_norm1")(x)
    y = keras.layers.Dense(3 * dim, use_bias=False, kernel_initializer=_dense_initializer(), name=name + "_attn_qkv")(y)
    y = ViTAttention(num_heads, name=name + "_attn")(y, keep_mask=keep_mask)
    y = keras.layers.Dense(dim, kernel_initializer=_dense_initializer(), name=name + "_attn_proj")(y)
    x = StochasticDepth(drop_path, name=name + "_drop_path1")([x, y])
    y = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name=name + "_norm2")(x)
    y = keras.layers.Dense(int(dim * mlp_ratio), kernel_initializer=_dense_initializer(), name=name + "_mlp_fc1")(y)
    y = keras.layers.Activation(mlp_activation, name=name + "_mlp_act")(y)
    y = keras.layers.Dense(dim, kernel_initializer=_dense_initializer(), name=name + "_mlp_fc2")(y)
    return StochasticDepth(drop_path, name=name + "_drop_path2")([x, y])


def vit(
    inputs,
    embed_dim=256,
    depth=12,
    num_heads=8,
    patch_size=9,
    mlp_ratio=4,
    drop_path_rate=0.1,
    mask_ratio=0.1,
    mlp_activation="relu6",
    bn_momentum=None,
    bn_epsilon=None,
):
    """Apply a face ViT to ``inputs`` (B, H, W, C); returns the final-LayerNorm tokens as a
    ``(B, H // patch_size, W // patch_size, embed_dim)`` map (12x12 for 112x112 with patch 9).

    Block ``i`` of ``depth`` gets stochastic-depth rate ``drop_path_rate * i / (depth - 1)``. ``mask_ratio``
    is the training-time token masking of arcface_torch (0 disables it and the mask token).
    ``bn_momentum`` / ``bn_epsilon`` must stay ``None``: there is no BatchNormalization to apply them to.
    """
    if bn_momentum is not None or bn_epsilon is not None:
        raise ValueError(
            "vit has no BatchNormalization (it normalises with LayerNormalization, epsilon 1e-5): bn_momentum / "
            f"bn_epsilon do not apply, received bn_momentum={bn_momentum}, bn_epsilon={bn_epsilon}"
        )
    if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads:
        raise ValueError(
            f"vit embed_dim must be a positive multiple of num_heads, received {embed_dim=}, {num_heads=}"
        )
    if depth < 1:
        raise ValueError(f"vit depth must be positive, received depth={depth}")
    if patch_size < 1:
        raise ValueError(f"vit patch_size must be positive, received patch_size={patch_size}")
    if mlp_ratio <= 0:
        raise ValueError(f"vit mlp_ratio must be positive, received mlp_ratio={mlp_ratio}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise ValueError(f"vit drop_path_rate must be in [0, 1), received drop_path_rate={drop_path_rate}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"vit mask_ratio must be in [0, 1), received mask_ratio={mask_ratio}")
    height, width = inputs.shape[1], inputs.shape[2]
    if height is None or width is None or height < patch_size or width < patch_size:
        raise ValueError(
            f"vit needs a static input size of at least patch_size={patch_size}, received shape {inputs.shape}"
        )

    x = keras.layers.Conv2D(embed_dim, patch_size, strides=patch_size, name="patch_embed")(inputs)
    grid_h, grid_w = x.shape[1], x.shape[2]
    x = keras.layers.Reshape((grid_h * grid_w, embed_dim), name="patch_tokens")(x)
    x = PositionEmbedding(name="pos_embed")(x)
    keep_mask = ViTTokenMask(mask_ratio, name="token_mask")(x) if mask_ratio > 0 else None
    for index in range(depth):
        drop_path = drop_path_rate * index / (depth - 1) if depth > 1 else 0.0
        x = _block(x, keep_mask, num_heads, mlp_ratio, mlp_activation, drop_path, f"block{index + 1}")
    x = keras.layers.LayerNormalization(epsilon=LAYER_NORM_EPSILON, name="norm")(x)
    if keep_mask is not None:
        x = ViTMaskToken(name="mask_token")(x, keep_mask=keep_mask)
    return keras.layers.Reshape((grid_h, grid_w, embed_dim), name="feature_map")(x)


def vit_t(inputs, **kwargs):
    """arcface_torch ``vit_t``: embed 256, depth 12, 8 heads, patch 9, drop_path_rate 0.1, mask_ratio 0.1."""
    return vit(inputs, **{"embed_dim": 256, "depth": 12, "num_heads": 8, **kwargs})


def vit_s(inputs, **kwargs):
    """arcface_torch ``vit_s``: embed 512, depth 12, 8 heads, patch 9, drop_path_rate 0.1, mask_ratio 0.1."""
    return vit(inputs, **{"embed_dim": 512, "depth": 12, "num_heads": 8, **kwargs})


def vit_b(inputs, **kwargs):
    """arcface_torch ``vit_b``: embed 512, depth 24, 8 heads, patch 9, drop_path_rate 0.1, mask_ratio 0.1."""
    return vit(inputs, **{"embed_dim": 512, "depth": 24, "num_heads": 8, **kwargs})

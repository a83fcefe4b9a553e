"""Multi-head self-attention with 2-D position embeddings: the attention layer of BoTNet.

BoTNet (Srinivas et al., "Bottleneck Transformers for Visual Recognition", CVPR 2021) swaps the 3x3
convolution of the last ResNet stage for global self-attention over the feature map. Attention alone is
blind to position, so every query also scores each key by where it sits: with relative embeddings the
extra logit of query ``(h, w)`` for key ``(h', w')`` is ``q . r_h[h' - h] + q . r_w[w' - w]``
(the reference implementation's 2-D relative logits); with absolute embeddings it is
``q . (e_h[h'] + e_w[w'])``.

The embeddings are sized by the feature map, so the layer needs a fixed height and width at build time
(112x112 face crops give a 7x7 map in BoTNet50). Only ``keras.ops`` is used: the layer builds on the
JAX, TensorFlow and PyTorch backends.

Example:
    >>> import numpy as np
    >>> layer = MHSAWithPositionEmbedding(num_heads=2)
    >>> layer(np.zeros((1, 4, 5, 8), "float32")).shape
    (1, 4, 5, 8)
    >>> [weight.path.split("/")[-1] for weight in layer.weights]
    ['query_kernel', 'key_kernel', 'value_kernel', 'rel_emb_h', 'rel_emb_w']
"""

import keras
from keras import ops


def rel_to_abs(x):
    """Relative-position logits ``(B, heads, H, W, 2W - 1)`` to absolute ones ``(B, heads, H, W, W)``.

    Along the last axis, index ``m`` of the input is the relative offset ``m - (W - 1)`` (from ``-(W - 1)``
    to ``W - 1``); the output holds, for query column ``w`` and key column ``w'``,
    ``out[..., w, w'] = x[..., w, w' - w + W - 1]``. Done without a gather, as the BoTNet reference does:
    append one zero column (``W x 2W``), flatten, append ``W - 1`` zeros, view as ``(W + 1) x (2W - 1)``;
    the flat shift of one element per row lines every row up on absolute key positions, read from the
    first ``W`` rows and the last ``W`` columns. ``heads`` and ``H`` must be static; the batch may be unknown.

    Example:
        >>> import numpy as np
        >>> out = np.asarray(rel_to_abs(np.arange(45).reshape(1, 1, 3, 3, 5)))
        >>> out.shape
        (1, 1, 3, 3, 3)
        >>> out[0, 0, 0].tolist()
        [[2, 3, 4], [6, 7, 8], [10, 11, 12]]
    """
    _, heads, height, width, length = x.shape
    if length != 2 * width - 1:
        raise ValueError(f"rel_to_abs needs a last axis of 2 * W - 1 = {2 * width - 1}, received shape {x.shape}")
    x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, 0], [0, 1]])
    x = ops.reshape(x, (-1, heads, height, width * 2 * width))
    x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, width - 1]])
    x = ops.reshape(x, (-1, heads, height, width + 1, length))
    x = ops.split(x, [width], axis=3)[0]  # split, not x[...] indexing: a gather once the batch is symbolic
    return ops.split(x, [width - 1], axis=4)[1]  # (jax2tf export), which TFLite's converter cannot take


def relative_logits(query, rel_k_h, rel_k_w):
    """2-D relative position logits of BoTNet's reference: ``(B, heads, H, W, H, W)``.

    ``query`` is ``(B, heads, H, W, d)``, ``rel_k_h`` is ``(2H - 1, d)`` and ``rel_k_w`` is ``(2W - 1, d)``
    (row ``H - 1`` / ``W - 1`` is offset 0). Entry ``[b, n, h, w, h', w']`` is
    ``query[b, n, h, w] . (rel_k_h[h' - h + H - 1] + rel_k_w[w' - w + W - 1])``. The width term is the 1-D
    relative logit along each row (``rel_to_abs`` over the width axis); the height term is the same along
    each column, computed on the query with ``H`` and ``W`` swapped and swapped back; both broadcast
    over the other key axis.

    Example:
        >>> import numpy as np
        >>> relative_logits(np.ones((2, 4, 3, 5, 8)), np.ones((5, 8)), np.ones((9, 8))).shape
        (2, 4, 3, 5, 3, 5)
    """
    logits_w = rel_to_abs(ops.einsum("bnhwd,md->bnhwm", query, rel_k_w))  # (B, heads, H, W, W)
    query_t = ops.transpose(query, (0, 1, 3, 2, 4))  # (B, heads, W, H, d)
    logits_h = rel_to_abs(ops.einsum("bnwhd,md->bnwhm", query_t, rel_k_h))  # (B, heads, W, H, H)
    logits_h = ops.transpose(logits_h, (0, 1, 3, 2, 4))  # (B, heads, H, W, H)
    return ops.expand_dims(logits_h, -1) + ops.expand_dims(logits_w, -2)


def absolute_logits(query, emb_h, emb_w):
    """Absolute position logits ``(B, heads, H, W, H, W)``: ``query[b, n, h, w] . (emb_h[h'] + emb_w[w'])``.

    ``query`` is ``(B, heads, H, W, d)``, ``emb_h`` is ``(H, d)`` and ``emb_w`` is ``(W, d)``.

    Example:
        >>> import numpy as np
        >>> absolute_logits(np.ones((1, 2, 3, 4, 8)), np.ones((3, 8)), np.ones((4, 8))).shape
        (1, 2, 3, 4, 3, 4)
    """
    emb = ops.expand_dims(emb_h, 1) + ops.expand_dims(emb_w, 0)  # (H, W, d)
    return ops.einsum("bnhwd,pqd->bnhwpq", query, emb)


@keras.saving.register_keras_serializable(package="keras_insightface")
class MHSAWithPositionEmbedding(keras.layers.Layer):
    """Multi-head self-attention over a ``(B, H, W, C)`` map, output ``(B, H, W, num_heads * key_dim)``.

    Every position attends to every position of the map. Queries, keys and values are 1x1 projections
    without bias, kept as three separate ``(C, num_heads * key_dim)`` kernels (``query_kernel``,
    ``key_kernel``, ``value_kernel``, like the per-projection weights of the reference); queries are
    scaled by ``key_dim ** -0.5`` before both the content and the position logits, and the softmax runs
    over all ``H * W`` keys. There is no output projection: BoTNet's following 1x1 convolution does that.

    ``key_dim`` defaults to ``C // num_heads`` (BoTNet: a 512-channel bottleneck, 4 heads of 128), so the
    output keeps the input's channel count. ``relative=True`` learns ``rel_emb_h`` ``(2H - 1, key_dim)`` and
    ``rel_emb_w`` ``(2W - 1, key_dim)``, shared by the heads (see ``relative_logits``); ``relative=False``
    learns absolute ``abs_emb_h`` ``(H, key_dim)`` and ``abs_emb_w`` ``(W, key_dim)``. Embeddings start from
    a normal distribution of standard deviation ``key_dim ** -0.5``, as the reference. ``H`` and ``W`` must
    be known when the layer is built.

    Example:
        >>> import numpy as np
        >>> layer = MHSAWithPositionEmbedding(num_heads=4, key_dim=8, relative=False)
        >>> layer(np.zeros((2, 3, 3, 16), "float32")).shape
        (2, 3, 3, 32)
        >>> layer.attention_weights(np.zeros((2, 3, 3, 16), "float32")).shape
        (2, 4, 9, 9)
    """

    def __init__(self, num_heads=4, key_dim=None, relative=True, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if num_heads < 1:
            raise ValueError(f"MHSAWithPositionEmbedding needs num_heads >= 1, received num_heads={num_heads}")
        if key_dim is not None and key_dim < 1:
            raise ValueError(f"MHSAWithPositionEmbedding needs key_dim >= 1 or None, received key_dim={key_dim}")
        self.num_heads = int(num_heads)
        self.key_dim = None if key_dim is None else int(key_dim)
        self.relative = bool(relative)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[1] is None or input_shape[2] is None or input_shape[3] is None:
            raise ValueError(
                f"MHSAWithPositionEmbedding needs a (batch, H, W, C) input with static H, W and C, "
                f"received input_shape={tuple(input_shape)}"
            )
        _, height, width, channels = input_shape
        if self.key_dim is None:
            if channels % self.num_heads:
                raise ValueError(
                    f"MHSAWithPositionEmbedding: channels={channels} is not divisible by "
                    f"num_heads={self.num_heads}; pass key_dim explicitly"
                )
            self.key_dim = channels // self.num_heads
        emb_dim = self.num_heads * self.key_dim

        # A Keras initializer repeats its values on every call: each kernel gets its own copy, an integer
        # seed offset per kernel, so that query, key and value do not start equal.
        def kernel_init(index):
            config = self.kernel_initializer.get_config()
            if isinstance(config.get("seed"), int):
                config["seed"] += index
            return type(self.kernel_initializer).from_config(config)

        def emb_init():
            return keras.initializers.RandomNormal(stddev=self.key_dim**-0.5)

        kernel_shape = (channels, emb_dim)
        self.query_kernel = self.add_weight(name="query_kernel", shape=kernel_shape, initializer=kernel_init(0))
        self.key_kernel = self.add_weight(name="key_kernel", shape=kernel_shape, initializer=kernel_init(1))
        self.value_kernel = self.add_weight(name="value_kernel", shape=kernel_shape, initializer=kernel_init(2))
        if self.relative:
            h_shape, w_shape, prefix = (2 * height - 1, self.key_dim), (2 * width - 1, self.key_dim), "rel"
        else:
            h_shape, w_shape, prefix = (height, self.key_dim), (width, self.key_dim), "abs"
        self.emb_h = self.add_weight(name=f"{prefix}_emb_h", shape=h_shape, initializer=emb_init())
        self.emb_w = self.add_weight(name=f"{prefix}_emb_w", shape=w_shape, initializer=emb_init())

    def _split_heads(self, x, height, width):
        """``(B, H, W, heads * d)`` -> ``(B, heads, H, W, d)``."""
        x = ops.reshape(x, (-1, height, width, self.num_heads, self.key_dim))
        return ops.transpose(x, (0, 3, 1, 2, 4))

    def _attend(self, inputs):
        """Softmax attention weights ``(B, heads, HW, HW)`` and values ``(B, heads, HW, key_dim)``."""
        _, height, width, _ = inputs.shape
        positions = height * width
        query = self._split_heads(ops.matmul(inputs, self.query_kernel), height, width) * (self.key_dim**-0.5)
        key = self._split_heads(ops.matmul(inputs, self.key_kernel), height, width)
        value = self._split_heads(ops.matmul(inputs, self.value_kernel), height, width)
        flat = (-1, self.num_heads, positions, self.key_dim)
        query_flat, key, value = ops.reshape(query, flat), ops.reshape(key, flat), ops.reshape(value, flat)
        logits = ops.matmul(query_flat, ops.transpose(key, (0, 1, 3, 2)))  # (B, heads, HW, HW)
        if self.relative:
            position = relative_logits(query, self.emb_h, self.emb_w)
        else:
            position = absolute_logits(query, self.emb_h, self.emb_w)
        logits = logits + ops.reshape(position, (-1, self.num_heads, positions, positions))
        return ops.softmax(logits, axis=-1), value

    def attention_weights(self, inputs):
        """The attention weights ``(B, heads, H * W, H * W)``: row ``i`` is query position ``i``, sums to 1."""
        if not self.built:
            self.build(inputs.shape)
        return self._attend(ops.convert_to_tensor(inputs, self.compute_dtype))[0]

    def call(self, inputs):
        _, height, width, _ = inputs.shape
        weights, value = self._attend(inputs)
        output = ops.matmul(weights, value)  # (B, heads, HW, key_dim)
        output = ops.transpose(output, (0, 2, 1, 3))
        return ops.reshape(output, (-1, height, width, self.num_heads * self.key_dim))

    def compute_output_shape(self, input_shape):
        key_dim = self.key_dim if self.key_dim is not None else input_shape[-1] // self.num_heads
        return (*input_shape[:3], self.num_heads * key_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            relative=self.relative,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config

"""L2 normalisation with ``keras.ops``, shared by heads and losses.

``x / sqrt(max(sum(x^2), eps))``: an all-zero row stays zero instead of becoming NaN (as ``tf.nn.l2_normalize``).

Example:
    >>> import numpy as np
    >>> np.asarray(l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]], "float32"))).tolist()
    [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
"""

from keras import ops


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """``x`` divided by its L2 norm along ``axis`` (norm² floored at ``epsilon``)."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True), epsilon))

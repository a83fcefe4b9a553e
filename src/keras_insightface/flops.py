"""Forward-pass FLOPs of a Keras model, from XLA's cost analysis of the compiled function (JAX backend).

Counts multiply and add as two FLOPs (XLA's convention); "GFLOPs" tables of face models usually quote
multiply-accumulates, i.e. half of this.

Example:
    >>> from keras_insightface.models import buildin_models
    >>> round(gflops(buildin_models("r18_tiny", emb_shape=128)), 3) > 0
    True
"""

import keras
import numpy as np


def jitted_forward(model):
    """``(fn, variables)``: a jitted inference forward ``fn(*variables, inputs)`` of ``model`` (JAX backend)."""
    if keras.backend.backend() != "jax":
        raise ValueError(f"this needs the JAX backend, the current backend is {keras.backend.backend()!r}")
    import jax

    variables = [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]

    def forward(trainable, non_trainable, inputs):
        return model.stateless_call(trainable, non_trainable, inputs, training=False)[0]

    return jax.jit(forward), variables


def gflops(model, batch_size=1):
    """GFLOPs of one forward pass of ``model`` on ``batch_size`` inputs (inference mode)."""
    forward, variables = jitted_forward(model)
    shape = (batch_size, *model.input_shape[1:])
    compiled = forward.lower(*variables, np.zeros(shape, "float32")).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", 0.0)) / 1e9  # no key when the model does no arithmetic

"""Forward-pass cost of a Keras model in GFLOPs, in the convention of face-recognition tables (JAX backend).

Two counts of one inference forward:

- ``"macs"`` (the default, what "GFLOPs" means in this project): multiply-accumulates of the convolutions and
  matrix products (dense layers, attention's query-key and weight-value products, any einsum), one per
  multiply-add, zero padding included: a convolution costs output positions x kernel taps x input channels per
  group x output channels. This is the papers' "MAdds" and what insightface calls GFLOPs: arcface_torch's
  ``flops.py`` prints ptflops' multiply-accumulate count as "GFLOPs" (r50 6.3, r100 12.1 in its README), and
  ViT rows add the attention products (its ``extra_gflops``) as here. ptflops also counts one per element of
  every BatchNorm (two when affine), activation and pooling, which this count leaves out: on arcface_torch's
  own networks (ptflops 0.7.5) that adds 0.4% to r50 (6.334 against 6.309) and 3.3% to ``mbf`` (0.452 against
  0.4375). Our r18 / r50 / r100 / r200 with the ``E`` head count exactly what PyTorch's flop counter counts on
  arcface_torch's.
- ``"flops"``: XLA's cost analysis of the compiled forward, a multiply and an add counted as two and every
  elementwise operation (BatchNorm, activations, residual adds) counted too; taps that fall on zero padding
  are not counted, so it is less than twice the MACs on small feature maps (r50, ``E`` head: 11.71 against
  2 x 6.309).

The MACs are read from the traced program (``jax.make_jaxpr`` of the inference forward): every
``conv_general_dilated`` and ``dot_general``, whichever layer issued it, without compiling.

Example:
    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> outputs = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    >>> model = keras.Model(inputs, outputs)
    >>> multiply_accumulates(model)  # 8 x 8 positions x 3 x 3 taps x 3 in x 4 out
    6912
    >>> round(gflops(model) * 1e9)
    6912
"""

import keras
import numpy as np

CONVENTIONS = ("macs", "flops")


def jitted_forward(model):
    """``(fn, variables)``: a jitted inference forward ``fn(*variables, inputs)`` of ``model`` (JAX backend)."""
    if keras.backend.backend() != "jax":
        raise ValueError(f"this needs the JAX backend, the current backend is {keras.backend.backend()!r}")
    import jax

    variables = [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]

    def forward(trainable, non_trainable, inputs):
        return model.stateless_call(trainable, non_trainable, inputs, training=False)[0]

    return jax.jit(forward), variables


def _zeros_input(model, batch_size):
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, received batch_size={batch_size}")
    return np.zeros((batch_size, *model.input_shape[1:]), "float32")


def _subprograms(params):
    """The jaxprs held in an equation's parameters (a jit body, a custom-gradient function, ...)."""
    for value in params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "eqns"):
                yield item
            elif hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
                yield item.jaxpr


def _equation_macs(eqn):
    if eqn.primitive.name == "dot_general":
        (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return int(np.prod(eqn.outvars[0].aval.shape)) * int(np.prod([lhs[i] for i in lhs_contracting]))
    # conv_general_dilated: each output value is a sum over the kernel's taps and its input channels per group
    kernel = eqn.invars[1].aval.shape
    out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
    return int(np.prod(eqn.outvars[0].aval.shape)) * (int(np.prod(kernel)) // out_features)


def _program_macs(jaxpr):
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("dot_general", "conv_general_dilated"):
            total += _equation_macs(eqn)
        elif name == "cond":  # one branch runs: count the dearest
            total += max(_program_macs(branch.jaxpr) for branch in eqn.params["branches"])
        elif name == "scan":
            total += eqn.params["length"] * _program_macs(eqn.params["jaxpr"].jaxpr)
        elif name == "while":
            if any(_program_macs(sub) for sub in _subprograms(eqn.params)):
                raise ValueError("a while loop holds convolutions or matrix products: its trip count is unknown")
        else:
            total += sum(_program_macs(sub) for sub in _subprograms(eqn.params))
    return total


def multiply_accumulates(model, batch_size=1):
    """Multiply-accumulates of convolutions and matrix products in one inference forward of ``batch_size``."""
    import jax

    forward, variables = jitted_forward(model)
    try:
        return _program_macs(jax.make_jaxpr(forward)(*variables, _zeros_input(model, batch_size)).jaxpr)
    except ValueError as error:
        raise ValueError(f"{model.name}: cannot count multiply-accumulates: {error}") from error


def xla_flops(model, batch_size=1):
    """XLA's cost-analysis FLOPs of one compiled inference forward (multiply and add counted apart)."""
    forward, variables = jitted_forward(model)
    compiled = forward.lower(*variables, _zeros_input(model, batch_size)).compile()
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", 0.0))  # no key when the model does no arithmetic


def gflops(model, batch_size=1, convention="macs"):
    """Billions of operations in one inference forward of ``model`` on ``batch_size`` inputs.

    ``convention="macs"`` (the field's "GFLOPs": multiply-accumulates of convolutions and matrix products) or
    ``"flops"`` (XLA's count, multiply and add apart, elementwise work included); see the module doc.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, received convention={convention!r}")
    if convention == "macs":
        return multiply_accumulates(model, batch_size) / 1e9
    return xla_flops(model, batch_size) / 1e9

"""Optimizers with the weight-decay conventions face-recognition recipes use.

* ``L2SGD``: coupled L2 (``grad + l2 * w`` enters the momentum), as PyTorch/MXNet SGD in insightface.
* ``SGDW`` / ``AdamW``: decoupled weight decay that follows the learning-rate schedule, as TF-Addons' SGDW/AdamW
  did in the seed with its decay scaled by the schedule: each step ``w <- w - weight_decay * lr(step) / lr_base * w``,
  apart from the gradient step (Loshchilov & Hutter, https://arxiv.org/abs/1711.05101).
* ``Lookahead``: slow weights that pull the fast ones back every ``sync_period`` steps (Zhang et al. 2019).

A variable with a ``sparse_class_axis`` attribute (Partial FC's kernel) is updated by ``L2SGD`` and ``SGDW`` only in
the classes whose gradient is non-zero, i.e. the classes sampled this step: their momentum and weight decay advance,
the others stay exactly as they were. ``decay_factors`` scales the decay of some variables by path suffix
(``{"norm_dense_w": 0.0}``: no decay on the classifier kernel, the seed's ``output_weight_decay=0``).

Gradient clipping and accumulation are Keras's own and need nothing here: ``clipnorm`` / ``global_clipnorm`` clip
the loss gradient before the L2 term is added (as ``clip_grad_norm_`` before ``SGD.step`` in PyTorch), and
``gradient_accumulation_steps=N`` averages the ``N`` micro-batch gradients and runs the update (momentum, L2,
decay) once, so ``N`` batches of ``b`` equal one batch of ``N * b`` for a mean-reduced loss. Keras evaluates a
schedule at the micro-batch count, i.e. a schedule written in dataset batches keeps its meaning.

Example:
    >>> import keras_insightface  # noqa: F401
    >>> from keras_insightface.training.schedules import WarmupCosine
    >>> schedule = WarmupCosine(0.1, total_steps=100, warmup_steps=10)
    >>> optimizer = Lookahead(SGDW(schedule, momentum=0.9, weight_decay=5e-4), sync_period=6, slow_step_size=0.5)
    >>> optimizer.optimizer.lr_base, round(float(optimizer.learning_rate), 4)
    (0.1, 0.0)
"""

import keras
from keras import ops


def _class_mask(gradient, variable):
    """Where the classes of a ``sparse_class_axis`` variable got a non-zero gradient (broadcastable); else None."""
    axis = getattr(variable, "sparse_class_axis", None)
    if axis is None:
        return None
    other_axes = tuple(i for i in range(len(variable.shape)) if i != axis)
    return ops.any(ops.not_equal(gradient, 0), axis=other_axes, keepdims=True)


def _masked(touched, new, old):
    return new if touched is None else ops.where(touched, new, old)


def decay_factor(decay_factors, variable):
    """The weight-decay multiplier of ``variable``: the factor of the first ``decay_factors`` key its path ends
    with (e.g. ``{"norm_dense_w": 0.0}`` for the seed's ``output_weight_decay``), else 1."""
    for suffix, factor in (decay_factors or {}).items():
        if variable.path.endswith(suffix):
            return float(factor)
    return 1.0


class _ClassMaskedSGD(keras.optimizers.SGD):
    """SGD whose update of a ``sparse_class_axis`` variable leaves the classes without gradient untouched.

    Subclasses add their decay through ``_coupled_gradient`` (L2 into the gradient) or ``_decoupled_decay``
    (the fraction of the weight removed before the gradient step).
    """

    def _coupled_gradient(self, gradient, variable):
        return gradient

    def _decoupled_decay(self, variable):
        return None

    def update_step(self, gradient, variable, learning_rate):
        gradient = ops.cast(gradient, variable.dtype)
        touched = _class_mask(gradient, variable)
        gradient = self._coupled_gradient(gradient, variable)
        decay = self._decoupled_decay(variable)
        if decay is not None:
            value = ops.convert_to_tensor(variable)
            self.assign(variable, _masked(touched, ops.subtract(value, ops.multiply(value, decay)), value))
        if touched is None:
            return super().update_step(gradient, variable, learning_rate)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        step = ops.multiply(gradient, learning_rate)
        if self.momentum:
            velocity = self.momentums[self._get_variable_index(variable)]
            new_velocity = ops.subtract(ops.multiply(velocity, self.momentum), step)
            self.assign(velocity, ops.where(touched, new_velocity, ops.convert_to_tensor(velocity)))
            step = ops.subtract(step, ops.multiply(new_velocity, self.momentum)) if self.nesterov else -new_velocity
        value = ops.convert_to_tensor(variable)
        self.assign(variable, ops.where(touched, ops.subtract(value, step), value))


@keras.saving.register_keras_serializable(package="keras_insightface")
class L2SGD(_ClassMaskedSGD):
    """SGD with coupled L2 weight decay: ``grad + l2 * w`` enters the momentum, as PyTorch/MXNet SGD do.

    (Keras's ``weight_decay`` argument is decoupled, see ``SGDW``; insightface recipes use this one.)

    A variable with a ``sparse_class_axis`` attribute (Partial FC's kernel) is updated only in the classes whose
    gradient is non-zero, i.e. the classes sampled this step: their momentum and weight decay advance, the
    others stay exactly as they were.

    Example:
        >>> optimizer = L2SGD(learning_rate=0.1, momentum=0.9, l2=5e-4)
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, l2=5e-4, decay_factors=None, name="l2sgd", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, name=name, **kwargs)
        self.l2, self.decay_factors = float(l2), dict(decay_factors or {})

    def _coupled_gradient(self, gradient, variable):
        l2 = self.l2 * decay_factor(self.decay_factors, variable)
        return ops.add(gradient, ops.multiply(variable, l2)) if l2 else gradient

    def get_config(self):
        return {**super().get_config(), "l2": self.l2, "decay_factors": self.decay_factors}


def _resolve_lr_base(lr_base, learning_rate):
    """The learning rate at which ``weight_decay`` applies as given: explicit, the float LR, or the schedule's peak."""
    if lr_base is None:
        if isinstance(learning_rate, (int, float)):
            lr_base = learning_rate
        else:
            for attribute in ("lr_base", "warmup_target", "initial_learning_rate"):
                if getattr(learning_rate, attribute, None) is not None:
                    lr_base = getattr(learning_rate, attribute)
                    break
    if lr_base is None:
        raise ValueError(f"Cannot tell the base learning rate of {learning_rate!r}: pass lr_base explicitly "
                         "(the decay at each step is weight_decay * lr(step) / lr_base)")
    if not float(lr_base) > 0:
        raise ValueError(f"lr_base must be > 0, received {lr_base}")
    return float(lr_base)


class _ScheduledDecay:
    """Decoupled decay that follows the learning rate: the rate removed per step is ``wd * lr(step) / lr_base``."""

    def _decay_rate(self, variable):
        factor = decay_factor(self.decay_factors, variable)
        if not self.weight_decay or not factor or not self._use_weight_decay(variable):
            return None
        learning_rate = ops.cast(self.learning_rate, variable.dtype)
        return ops.multiply(learning_rate, ops.cast(self.weight_decay * factor / self.lr_base, variable.dtype))

    def get_config(self):
        return {**super().get_config(), "lr_base": self.lr_base, "decay_factors": self.decay_factors}


@keras.saving.register_keras_serializable(package="keras_insightface")
class SGDW(_ScheduledDecay, _ClassMaskedSGD):
    """SGD (momentum) with decoupled weight decay that follows the schedule: TF-Addons' SGDW as the seed used it.

    Each step, before the momentum update, ``w <- w - weight_decay * lr(step) / lr_base * w``; ``lr_base`` defaults
    to the float ``learning_rate`` or the schedule's ``lr_base`` / ``warmup_target`` / ``initial_learning_rate``.
    Variables excluded with ``exclude_from_weight_decay`` are not decayed; a ``sparse_class_axis`` variable is
    decayed and moved only in the classes with gradient, as in ``L2SGD``.

    Example:
        >>> optimizer = SGDW(learning_rate=0.1, momentum=0.9, weight_decay=5e-4)
        >>> optimizer.lr_base
        0.1
    """

    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=5e-4, lr_base=None, decay_factors=None,
                 name="sgdw", **kwargs):
        super().__init__(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay, name=name,
                         **kwargs)
        self.lr_base, self.decay_factors = _resolve_lr_base(lr_base, learning_rate), dict(decay_factors or {})

    def _apply_weight_decay(self, variables):
        """Nothing here: ``update_step`` decays each variable first, where the class mask is known."""

    def _decoupled_decay(self, variable):
        return self._decay_rate(variable)


@keras.saving.register_keras_serializable(package="keras_insightface")
class AdamW(_ScheduledDecay, keras.optimizers.AdamW):
    """Adam with decoupled weight decay that follows the schedule: TF-Addons' AdamW as the seed used it.

    Each step, before the Adam update, ``w <- w - weight_decay * lr(step) / lr_base * w`` (Keras's own AdamW
    removes ``weight_decay * lr(step) * w``). ``exclude_from_weight_decay`` is respected; ``sparse_class_axis``
    is not (Adam's moments move every class anyway).

    Example:
        >>> optimizer = AdamW(learning_rate=1e-3, weight_decay=5e-5)
        >>> optimizer.lr_base
        0.001
    """

    def __init__(self, learning_rate=0.001, weight_decay=5e-5, lr_base=None, decay_factors=None, name="adamw",
                 **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs)
        self.lr_base, self.decay_factors = _resolve_lr_base(lr_base, learning_rate), dict(decay_factors or {})

    def _apply_weight_decay(self, variables):
        for variable in variables:
            decay = self._decay_rate(variable)
            if decay is not None:
                variable.assign(ops.subtract(variable, ops.multiply(variable, decay)))


def _copy(variable, dtype):
    """A new buffer with the variable's value: JAX refuses to donate one buffer for two state entries."""
    return ops.copy(ops.cast(variable.value, dtype))


@keras.saving.register_keras_serializable(package="keras_insightface")
class Lookahead(keras.optimizers.Optimizer):
    """Lookahead (Zhang et al. 2019, https://arxiv.org/abs/1907.08610), TF-Addons' Lookahead as the seed used it.

    ``optimizer`` moves the (fast) model weights every step; every ``sync_period`` updates the slow weights, which
    start as the model weights at build, move ``slow <- slow + slow_step_size * (fast - slow)`` and the model
    weights are reset to them. The sync is a ``keras.ops.cond`` on the step, so it runs inside a jitted train step.
    With ``gradient_accumulation_steps`` on the inner optimizer, ``sync_period`` counts its real updates.

    ``learning_rate`` and ``iterations`` are the inner optimizer's, so callbacks that read or set the learning rate
    work unchanged. Wrap it in ``LossScaleOptimizer`` (not the reverse), so a skipped fp16 step skips the sync count.

    Example:
        >>> optimizer = Lookahead(L2SGD(0.1), sync_period=6, slow_step_size=0.5)
        >>> round(float(optimizer.learning_rate), 4)
        0.1
    """

    def __init__(self, optimizer, sync_period=6, slow_step_size=0.5, name="lookahead"):
        super().__init__(learning_rate=0.0, name=name)
        if isinstance(optimizer, (str, dict)):
            optimizer = keras.optimizers.get(optimizer)
        if int(sync_period) < 1 or not 0.0 <= float(slow_step_size) <= 1.0:
            raise ValueError(f"Lookahead needs sync_period >= 1 and 0 <= slow_step_size <= 1, got {sync_period=}, "
                             f"{slow_step_size=}")
        self.optimizer = optimizer
        self.sync_period, self.slow_step_size = int(sync_period), float(slow_step_size)

    def build(self, var_list):
        """Builds the inner optimizer and one slow copy of each model variable (none for overwritten ones)."""
        if self.built:
            return
        self.optimizer.build(var_list)
        super().build(var_list)
        self.slow_weights = [
            None if self._overwrite_variable_with_gradient(variable) else self.add_variable_from_reference(
                variable, name="slow", initializer=lambda shape, dtype, source=variable: _copy(source, dtype))
            for variable in var_list
        ]

    @property
    def variables(self):
        return self._variables + self.optimizer.variables

    def apply(self, grads, trainable_variables=None):
        """The inner optimizer's step, then the sync where this is the last step of a period (selected by cond)."""
        if not self.built:
            with keras.name_scope(self.name, caller=self):
                self.build(trainable_variables)
        self.optimizer.apply(grads, trainable_variables)
        variables = self._trainable_variables if trainable_variables is None else list(trainable_variables)
        pairs = [(v, self.slow_weights[self._get_variable_index(v)]) for v in variables]
        pairs = [(fast, slow) for fast, slow in pairs if slow is not None]
        fasts = [ops.convert_to_tensor(fast) for fast, _ in pairs]
        slows = [ops.convert_to_tensor(slow) for _, slow in pairs]
        period = (self.optimizer.gradient_accumulation_steps or 1) * self.sync_period
        is_sync = ops.equal(ops.mod(ops.add(self._iterations, 1), period), 0)

        def sync():
            synced = [ops.add(s, ops.multiply(ops.subtract(f, s), self.slow_step_size)) for f, s in zip(fasts, slows)]
            return synced, synced

        fasts, slows = ops.cond(is_sync, sync, lambda: (fasts, slows))
        for (fast, slow), fast_value, slow_value in zip(pairs, fasts, slows):
            self.assign(fast, fast_value)
            self.assign(slow, slow_value)
        self._iterations.assign_add(1)

    @property
    def learning_rate(self):
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.optimizer.iterations

    def scale_loss(self, loss):
        return self.optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.optimizer.finalize_variable_values(var_list)

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(self.optimizer),
            "sync_period": self.sync_period,
            "slow_step_size": self.slow_step_size,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(config.pop("optimizer"), custom_objects=custom_objects)
        return cls(optimizer, **config)


def named_optimizer(name, schedule, momentum=0.9, weight_decay=5e-4, lr_base=0.1, decay_factors=None):
    """A stage optimizer by name: ``sgd`` (``L2SGD``, coupled L2 ``weight_decay``), ``sgdw`` / ``adamw`` (decoupled
    decay of ``weight_decay * lr`` per step, as PyTorch's), ``lookahead_<name>`` (``Lookahead`` around it), or a
    Keras optimizer name; ``schedule`` is its learning rate.

    Example:
        >>> type(named_optimizer("lookahead_sgdw", 0.1).optimizer).__name__
        'SGDW'
    """
    decay_factors = decay_factors or {}
    if name.startswith("lookahead_"):
        inner = named_optimizer(name[len("lookahead_"):], schedule, momentum, weight_decay, lr_base, decay_factors)
        return Lookahead(inner)
    if name == "sgd":
        return L2SGD(schedule, momentum=momentum, l2=weight_decay, decay_factors=decay_factors)
    if name in ("sgdw", "adamw"):
        decay = dict(weight_decay=weight_decay * lr_base, lr_base=lr_base, decay_factors=decay_factors)
        return SGDW(schedule, momentum=momentum, **decay) if name == "sgdw" else AdamW(schedule, **decay)
    try:
        return keras.optimizers.get({"class_name": name, "config": {"learning_rate": schedule}})
    except ValueError:
        raise ValueError(f"Unknown optimizer {name!r}: use sgd, sgdw, adamw, lookahead_<one of them>, or a "
                         "Keras optimizer name such as adam") from None

"""Optimizers with the weight-decay conventions face-recognition recipes use.

* ``L2SGD``: coupled L2 (``grad + l2 * w`` enters the momentum), as PyTorch/MXNet SGD in insightface.
* ``SGDW`` / ``AdamW``: decoupled weight decay that follows the learning-rate schedule, as TF-Addons' SGDW/AdamW
  did in the seed with its decay scaled by the schedule: each step ``w <- w - weight_decay * lr(step) / lr_base * w``,
  apart from the gradient step (Loshchilov & Hutter, https://arxiv.org/abs/1711.05101).
* ``RectifiedAdam``: RAdam (Liu et al. 2019, https://arxiv.org/abs/1908.03265) as TF-Addons computes it, the seed's
  ``tfa.optimizers.RectifiedAdam``; Ranger is ``Lookahead`` around it (``named_optimizer("ranger", ...)``).
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

import math

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


def _one_minus_power(log_beta, step):
    """``1 - beta ** step`` from ``log_beta = ln(beta)``, exact in float32 even where ``beta ** step`` is near 1."""
    return ops.negative(ops.expm1(ops.multiply(step, log_beta)))


@keras.saving.register_keras_serializable(package="keras_insightface")
class RectifiedAdam(keras.optimizers.Optimizer):
    """Rectified Adam (Liu et al. 2019, https://arxiv.org/abs/1908.03265): TF-Addons' ``RectifiedAdam``, which the
    seed's README recommends; ``Lookahead(RectifiedAdam())`` is Ranger (``named_optimizer("ranger", lr)``).

    Adam's adaptive step has a large variance while its second moment averages few gradients, so the step uses it
    only once the length of the approximated simple moving average
    ``rho_t = rho_inf - 2 t beta_2^t / (1 - beta_2^t)`` (``rho_inf = 2 / (1 - beta_2) - 1``) reaches
    ``sma_threshold``, scaled by the rectifier ``r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)
    (rho_inf - 2) rho_t))``; before that (steps 1 to 5 with ``beta_2 = 0.999``) it is SGD with momentum:

    * ``rho_t >= sma_threshold``: ``w <- w - lr * r_t * m_hat / (sqrt(v_hat) + epsilon)``,
    * otherwise: ``w <- w - lr * m_hat``,

    ``m_hat`` and ``v_hat`` being Adam's bias-corrected moments (``v_hat`` from the running maximum of ``v`` with
    ``amsgrad``). As in TF-Addons, ``epsilon`` is added to ``sqrt(v_hat)`` (PyTorch's ``RAdam`` adds its ``eps`` to
    ``sqrt(v)``: its ``eps`` is ours times ``sqrt(1 - beta_2^t)``) and the test is ``rho_t >= 5`` (PyTorch:
    ``rho_t > 5``; the paper's Algorithm 2: ``rho_t > 4``). ``rho_t`` and the bias corrections are computed without
    the float32 cancellation of ``1 - beta_2^t``, so early steps match a float64 computation.

    ``weight_decay`` is decoupled and follows the learning rate, as in ``SGDW`` / ``AdamW``: each step removes
    ``weight_decay * lr(step) / lr_base * w``. TF-Addons' ``weight_decay=d`` (``d * lr(step) * w``, as PyTorch's
    ``decoupled_weight_decay=True``) is ``weight_decay=d * lr_base`` here. ``exclude_from_weight_decay`` and
    ``decay_factors`` are respected, ``sparse_class_axis`` is not (the moments move every class anyway).

    ``total_steps > 0`` adds TF-Addons' built-in schedule on top of ``learning_rate`` (which the decay follows too):
    a linear warmup from 0 over ``total_steps * warmup_proportion`` steps, then a linear decay to ``min_lr`` reached
    at ``total_steps`` and kept after.

    Example:
        >>> optimizer = RectifiedAdam(learning_rate=1e-3, weight_decay=1e-4, lr_base=1e-3)
        >>> optimizer.sma_threshold, optimizer.epsilon
        (5.0, 1e-07)
    """

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0,
                 amsgrad=False, sma_threshold=5.0, total_steps=0, warmup_proportion=0.1, min_lr=0.0, lr_base=None,
                 decay_factors=None, name="rectified_adam", **kwargs):
        weight_decay = float(weight_decay or 0.0)
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, name=name, **kwargs)
        if not (0.0 <= beta_1 < 1.0 and 0.0 < beta_2 < 1.0):
            raise ValueError(f"RectifiedAdam needs 0 <= beta_1 < 1 and 0 < beta_2 < 1, received {beta_1=}, {beta_2=}")
        if epsilon < 0 or weight_decay < 0 or min_lr < 0:
            raise ValueError(f"RectifiedAdam needs epsilon, weight_decay and min_lr >= 0, received {epsilon=}, "
                             f"{weight_decay=}, {min_lr=}")
        if not sma_threshold >= 4.0:
            raise ValueError(f"sma_threshold must be >= 4 (the rectifier is not real for rho_t < 4), received "
                             f"{sma_threshold}")
        if total_steps < 0 or int(total_steps) != total_steps or not 0.0 <= warmup_proportion <= 1.0:
            raise ValueError(f"RectifiedAdam needs an integer total_steps >= 0 (0: no built-in schedule) and "
                             f"0 <= warmup_proportion <= 1, received {total_steps=}, {warmup_proportion=}")
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = float(beta_1), float(beta_2), float(epsilon), amsgrad
        self.sma_threshold, self.total_steps = float(sma_threshold), int(total_steps)
        self.warmup_proportion, self.min_lr = float(warmup_proportion), float(min_lr)
        self.lr_base = _resolve_lr_base(lr_base, learning_rate) if weight_decay or lr_base is not None else None
        self.decay_factors = dict(decay_factors or {})

    def build(self, var_list):
        """The first and second moments of each variable (and the running maximum of the second with amsgrad)."""
        if self.built:
            return
        super().build(var_list)
        self._momentums, self._velocities = self.add_optimizer_variables(var_list, ["momentum", "velocity"])
        if self.amsgrad:
            self._velocity_hats = self.add_optimizer_variables(var_list, "velocity_hat")

    def _apply_weight_decay(self, variables):
        """Nothing here: ``update_step`` decays each variable with the learning rate of the built-in schedule."""

    def _scheduled_lr(self, learning_rate, step):
        """TF-Addons' warmup and linear decay over ``learning_rate`` when ``total_steps > 0``."""
        if not self.total_steps:
            return learning_rate
        warmup_steps = self.total_steps * self.warmup_proportion
        decay_steps = max(self.total_steps - warmup_steps, 1.0)
        warming = ops.divide(ops.multiply(learning_rate, step), max(warmup_steps, 1.0))
        progress = ops.divide(ops.minimum(ops.subtract(step, warmup_steps), decay_steps), decay_steps)
        decaying = ops.add(learning_rate, ops.multiply(ops.subtract(self.min_lr, learning_rate), progress))
        return ops.where(ops.less_equal(step, warmup_steps), warming, decaying)

    def _sma_length(self, step):
        """``rho_t`` in float32 without cancellation: with ``c = -ln(beta_2)`` and ``y = c t``,
        ``rho_t = (rho_inf - 2 / c) + 2 / c * (1 - y / expm1(y))``, the bracket by its series where ``y`` is small."""
        c = -math.log(self.beta_2)
        y = ops.multiply(step, c)
        y2 = ops.square(y)
        series = ops.multiply(y, ops.subtract(0.5, ops.multiply(y, ops.subtract(1 / 12, ops.multiply(y2, ops.subtract(
            1 / 720, ops.multiply(y2, ops.subtract(1 / 30240, ops.divide(y2, 1209600.0)))))))))
        large = ops.maximum(y, 0.5)
        direct = ops.subtract(1.0, ops.divide(large, ops.expm1(large)))
        sma_inf = 2.0 / (1.0 - self.beta_2) - 1.0
        return ops.add(sma_inf - 2.0 / c, ops.multiply(ops.where(ops.less(y, 0.5), series, direct), 2.0 / c))

    def _step_scalars(self, learning_rate, step):
        """The float32 learning rate, bias corrections, rectifier and whether this step is rectified."""
        learning_rate = self._scheduled_lr(ops.cast(learning_rate, "float32"), step)
        log_beta_1 = math.log(self.beta_1) if self.beta_1 > 0 else -math.inf
        m_correction = _one_minus_power(log_beta_1, step)
        v_correction = _one_minus_power(math.log(self.beta_2), step)
        sma_inf = 2.0 / (1.0 - self.beta_2) - 1.0
        scale = sma_inf / ((sma_inf - 4.0) * (sma_inf - 2.0)) if sma_inf > 4.0 else 0.0
        sma = self._sma_length(step)
        ratio = ops.divide(ops.multiply(ops.subtract(sma, 4.0), ops.subtract(sma, 2.0)), sma)
        rectifier = ops.sqrt(ops.maximum(ops.multiply(ratio, scale), 0.0))
        return learning_rate, m_correction, v_correction, rectifier, ops.greater_equal(sma, self.sma_threshold)

    def _decoupled_decay(self, variable, learning_rate):
        """The fraction of ``variable`` removed this step, ``weight_decay * lr / lr_base`` (None: no decay)."""
        factor = decay_factor(self.decay_factors, variable)
        if not self.weight_decay or not factor or not self._use_weight_decay(variable):
            return None
        return ops.multiply(learning_rate, self.weight_decay * factor / self.lr_base)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        step = ops.cast(ops.add(self.iterations, 1), "float32")
        learning_rate, m_correction, v_correction, rectifier, rectified = self._step_scalars(learning_rate, step)
        gradient = ops.cast(gradient, dtype)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1.0 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1.0 - self.beta_2))
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            self.assign(v_hat, ops.maximum(v_hat, v))
            v = v_hat
        m_hat = ops.divide(m, ops.cast(m_correction, dtype))
        v_hat_root = ops.sqrt(ops.divide(v, ops.cast(v_correction, dtype)))
        adaptive = ops.divide(ops.multiply(m_hat, ops.cast(rectifier, dtype)), ops.add(v_hat_root, self.epsilon))
        direction = ops.where(rectified, adaptive, m_hat)
        value = ops.convert_to_tensor(variable)
        new_value = ops.subtract(value, ops.multiply(direction, ops.cast(learning_rate, dtype)))
        decay = self._decoupled_decay(variable, learning_rate)
        if decay is not None:
            new_value = ops.subtract(new_value, ops.multiply(value, ops.cast(decay, dtype)))
        self.assign(variable, new_value)

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "amsgrad": self.amsgrad,
            "sma_threshold": self.sma_threshold,
            "total_steps": self.total_steps,
            "warmup_proportion": self.warmup_proportion,
            "min_lr": self.min_lr,
            "lr_base": self.lr_base,
            "decay_factors": self.decay_factors,
        }


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


def with_schedule(optimizer, schedule):
    """A fresh copy of ``optimizer`` (its config: momentum, weight decay, clipping, ...) whose learning rate is
    ``schedule``; loss scaling and ``Lookahead`` wrappers are kept around the inner optimizer.

    Example:
        >>> copy = with_schedule(keras.optimizers.SGD(0.5, momentum=0.8), 0.01)
        >>> round(float(copy.learning_rate), 4), copy.momentum
        (0.01, 0.8)
    """
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        config = optimizer.get_config()
        config.pop("inner_optimizer", None)
        config.pop("name", None)
        return keras.optimizers.LossScaleOptimizer(with_schedule(optimizer.inner_optimizer, schedule),
                                                   **{key: value for key, value in config.items()
                                                      if key in ("initial_scale", "dynamic_growth_steps")})
    if isinstance(optimizer, Lookahead):
        return Lookahead(with_schedule(optimizer.optimizer, schedule), sync_period=optimizer.sync_period,
                         slow_step_size=optimizer.slow_step_size)
    return type(optimizer).from_config({**optimizer.get_config(), "learning_rate": schedule})


def named_optimizer(name, schedule, momentum=0.9, weight_decay=5e-4, lr_base=0.1, decay_factors=None):
    """A stage optimizer by name: ``sgd`` (``L2SGD``, coupled L2 ``weight_decay``), ``sgdw`` / ``adamw`` (decoupled
    decay of ``weight_decay * lr`` per step, as PyTorch's), ``radam`` (``RectifiedAdam``, the same decoupled decay),
    ``ranger`` (``Lookahead(RectifiedAdam)``, sync period 6, slow step 0.5, TF-Addons' defaults),
    ``lookahead_<name>`` (``Lookahead`` around it), or a Keras optimizer name; ``schedule`` is its learning rate.

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
    if name in ("radam", "ranger"):
        radam = RectifiedAdam(schedule, weight_decay=weight_decay * lr_base, lr_base=lr_base,
                              decay_factors=decay_factors)
        return Lookahead(radam, sync_period=6, slow_step_size=0.5) if name == "ranger" else radam
    try:
        return keras.optimizers.get({"class_name": name, "config": {"learning_rate": schedule}})
    except ValueError:
        raise ValueError(f"Unknown optimizer {name!r}: use sgd, sgdw, adamw, radam, ranger, lookahead_<one of them>, "
                         "or a Keras optimizer name such as adam") from None

"""Scale-out on ``keras.distribution``: data parallel over all local devices, the class-sharded classifier head.

``Train`` runs on every local device by default (``keras.distribution.DataParallel``): the batch is split on
the ``batch`` mesh axis, variables are replicated, and XLA inserts the gradient all-reduce. One host for now
(``Train`` refuses several JAX processes: saving and evaluation do not gather variables across hosts yet).

With hundreds of thousands of identities the classifier kernel ``(embedding, classes)`` dominates memory and
the logits matmul. Sharding it on the class axis over a ``model`` mesh axis (model parallel) while the batch is
split over all devices (data parallel) gives every device ``classes / model`` columns; XLA's SPMD partitioner
inserts the collectives, so the loss is the single-device loss.

Example:
    >>> import keras
    >>> distribution = class_sharded_distribution(model_parallel=1)
    >>> distribution.batch_dim_name
    'batch'
"""

import keras

HEAD_KERNELS = ("norm_dense/norm_dense_w", "partial_fc/norm_dense_w", "dense_softmax/kernel")


class ClassShardedParallel(keras.distribution.ModelParallel):
    """``ModelParallel`` whose batch is split over every device (both mesh axes), as arcface_torch's model
    parallel: each device runs the backbone on its own samples while the classifier kernel is split on the class
    axis over ``model``.

    Keras's ``ModelParallel`` splits the batch on ``batch`` only and repeats it along ``model``: the backbone work
    is repeated ``model`` times, and XLA (checked with jax 0.10.2 on CPU, also in plain JAX) then returns
    depthwise-convolution kernel gradients multiplied by the ``model`` axis size.
    """

    def get_data_layout(self, data_shape):
        return _BatchOverAxesLayout((tuple(self.device_mesh.axis_names),) + (None,) * (len(data_shape) - 1),
                                    self.device_mesh)


class _BatchOverAxesLayout(keras.distribution.TensorLayout):
    """A layout whose first dimension is split over several mesh axes (a tuple of names, as jax's PartitionSpec
    takes it); Keras's own check only knows single axis names."""

    def _validate_axes(self):
        names = set(self.device_mesh.axis_names) if self.device_mesh else None
        for axis in self.axes:
            if names is not None and axis is not None and not set(axis if isinstance(axis, tuple) else [axis]) <= names:
                raise ValueError(f"layout axes {self.axes} are not all in the mesh axes {sorted(names)}")


def class_sharded_distribution(model_parallel=None, kernel_paths=HEAD_KERNELS, devices=None):
    """``ClassShardedParallel`` over a ``(batch, model)`` mesh with the head kernels split on their class axis.

    Args:
        model_parallel: devices that share one copy of the classifier (default: all devices).
        kernel_paths: variable paths (regular expressions) of the classifier kernels, ``(embedding, classes)``.
        devices: default ``keras.distribution.list_devices()``.
    """
    devices = devices or keras.distribution.list_devices()
    model_parallel = model_parallel or len(devices)
    if len(devices) % model_parallel:
        raise ValueError(f"model_parallel={model_parallel} does not divide the {len(devices)} devices")
    mesh = keras.distribution.DeviceMesh(
        (len(devices) // model_parallel, model_parallel), ("batch", "model"), devices=devices
    )
    layout_map = keras.distribution.LayoutMap(mesh)
    for path in kernel_paths:
        layout_map[path] = (None, "model")
    return ClassShardedParallel(layout_map=layout_map, batch_dim_name="batch")


def resolve_distribution(distribution="auto", model_parallel=1):
    """The distribution ``Train`` runs under: ``"auto"`` = all local devices (data parallel, or class-sharded
    with ``model_parallel`` > 1), ``None`` on a single device; ``None`` or a ``Distribution`` are used as given."""
    if distribution != "auto":
        if model_parallel > 1:
            raise ValueError(f"model_parallel={model_parallel} applies to distribution='auto' only, received {distribution!r}")
        return distribution
    devices = keras.distribution.list_devices()
    if model_parallel > 1:
        return class_sharded_distribution(model_parallel, devices=devices)
    if len(devices) == 1:
        return None
    return keras.distribution.DataParallel(devices=devices)


def data_parallel_size(distribution):
    """How many ways the batch is split: the size of the distribution's batch mesh axis (1 without one)."""
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    if isinstance(distribution, ClassShardedParallel):
        return len(mesh.devices.flat)
    return dict(zip(mesh.axis_names, mesh.shape))[distribution.batch_dim_name]

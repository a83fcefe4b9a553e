"""Scale-out on ``keras.distribution``: data parallel over all local devices, the class-sharded classifier head.

``Train`` runs on every device by default (``keras.distribution.DataParallel``): the batch is split on the
``batch`` mesh axis, variables are replicated, and XLA inserts the gradient all-reduce. Several hosts (JAX
processes, started with ``keras.distribution.initialize``) run the same program: each host's loader reads its own
shard of the data, arrays that span hosts are gathered for saving (``host_values``), files are written by process 0
(``is_primary``), and decisions that stop a run are agreed between hosts (``any_host``).

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

import contextlib
import json

import keras
import numpy as np

from keras_insightface.hosts import process_count

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
        distribution = class_sharded_distribution(model_parallel, devices=devices)
    elif len(devices) == 1:
        return None
    else:
        distribution = keras.distribution.DataParallel(devices=devices)
    distribution.auto_shard_dataset = False  # the loader already gives each host its own shard of the data
    return distribution


def data_parallel_size(distribution):
    """How many ways the batch is split: the size of the distribution's batch mesh axis (1 without one)."""
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    if isinstance(distribution, ClassShardedParallel):
        return len(mesh.devices.flat)
    return dict(zip(mesh.axis_names, mesh.shape))[distribution.batch_dim_name]


def batch_placer(distribution):
    """A function that starts a batch's transfer to the devices of ``distribution``, split as its data layout says,
    so ``Train`` can send the next batch while the current step runs; None where Keras's own transfer is used.

    Keras's JAX trainer sends batches one step ahead on a single accelerator, but under a distribution it places
    each batch only when the step asks for it. On one host a batch already placed with the layout passes through
    Keras unchanged; on several hosts Keras must assemble the global batch from each host's numpy part, so None.
    """
    if distribution is None or keras.backend.backend() != "jax" or process_count() > 1:
        return None
    import jax

    shardings = {}

    def sharding(shape):
        if shape not in shardings:
            shardings[shape] = distribution.get_data_layout(shape).backend_layout
        return shardings[shape]

    return lambda batch: jax.tree.map(lambda x: jax.device_put(x, sharding(x.shape)), batch)


def initialize_hosts(coordinator=None, num_processes=None, process_id=None):
    """Join a run of several hosts (``keras.distribution.initialize``); call before anything runs on a device.

    ``coordinator`` is process 0's ``host:port``; ``None`` values come from the environment
    (``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES``, ``KERAS_DISTRIBUTION_PROCESS_ID``)
    or, on clusters JAX knows (SLURM, Cloud TPU), from the cluster. CPU hosts exchange data through gloo.
    """
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # GPUs and TPUs use their own collectives
    keras.distribution.initialize(coordinator, num_processes, process_id)


@contextlib.contextmanager
def no_distribution():
    """Variables made inside live on this host's default device, whole, even within a distribution's scope."""
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def barrier(name):
    """Wait until every host has reached ``name`` (nothing to wait for on one host)."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def host_values(variables):
    """numpy copies of ``variables`` (Keras variables or JAX arrays), whole on every host.

    Arrays split across hosts (the class-sharded head kernel) are gathered, which is a collective: every host must
    call this at the same point of the run with the same variables.
    """
    values = []
    for variable in variables:
        value = getattr(variable, "value", variable)
        if getattr(value, "is_fully_addressable", True) or value.is_fully_replicated:
            values.append(np.asarray(value))
        else:
            from jax.experimental import multihost_utils

            values.append(np.asarray(multihost_utils.process_allgather(value, tiled=True)))
    return values


def gather_objects(obj):
    """Every host's JSON-able ``obj`` as a list in process order (a collective: all hosts call it together).

    Example:
        >>> gather_objects({"epoch": 3})
        [{'epoch': 3}]
    """
    if process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils

    data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
    sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32))).reshape(-1)
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: data.size] = data
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return [json.loads(bytes(row[:size])) for row, size in zip(gathered, sizes)]


def any_host(flag):
    """Whether ``flag`` is set on any host (a collective on several hosts), so all hosts take the same branch."""
    return any(gather_objects(bool(flag)))

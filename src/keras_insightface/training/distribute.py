"""Scale-out layouts on ``keras.distribution``: the class-sharded classifier head.

With hundreds of thousands of identities the classifier kernel ``(embedding, classes)`` dominates memory and
the logits matmul. Sharding it on the class axis over a ``model`` mesh axis (model parallel) while the batch is
split over a ``batch`` axis (data parallel) gives every device ``classes / model`` columns; XLA's SPMD
partitioner inserts the collectives, so the loss is the single-device loss.

Example:
    >>> import keras
    >>> distribution = class_sharded_distribution(model_parallel=1)
    >>> distribution.batch_dim_name
    'batch'
"""

import keras

HEAD_KERNELS = ("norm_dense/norm_dense_w", "partial_fc/norm_dense_w")


def class_sharded_distribution(model_parallel=None, kernel_paths=HEAD_KERNELS, devices=None):
    """``ModelParallel`` over a ``(batch, model)`` mesh with the head kernels split on their class axis.

    Args:
        model_parallel: devices per model shard group (default: all devices, i.e. no data parallel split).
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
    return keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")

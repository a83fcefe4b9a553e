"""Scale-out runs of ``Train`` on 8 virtual CPU devices (XLA_FLAGS set by the caller), for test_distribute.py.

    python tests/training/scale_out_run.py DATA_DIR OUT_DIR

The same 2-epoch run (global batch 16, augmentation on) three ways: one device (both epochs, the reference),
class-sharded head (model_parallel 4: the kernel split over 4 devices, the batch over all 8; epoch 1), and the
default, data parallel over all 8 devices with batch_size 2 (epoch 1, its checkpoint left for a resume on another
device count), and a batch as ``batch_placer`` sends it ahead. Prints one JSON line: per-batch running losses of
each run, the head kernel's sharding, the eval accuracies and the placed batch's sharding.
"""

import json
import os
import sys

import keras_insightface  # noqa: F401  (JAX backend)

import jax  # noqa: E402
import keras  # noqa: E402

from keras_insightface.losses.margin import ArcfaceLoss  # noqa: E402
from keras_insightface.training.train import Train  # noqa: E402


class Losses(keras.callbacks.Callback):
    def __init__(self, stop_after=0):
        super().__init__()
        self.values, self.stop_after = [], stop_after

    def on_train_batch_end(self, batch, logs=None):
        self.values.append(float(logs["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        if self.stop_after and epoch + 1 >= self.stop_after:
            self.model.stop_training = True


def run(data_dir, out_dir, name, batch_size, stop_after=0, **kwargs):
    trainer = Train(
        os.path.join(data_dir, "rec"), f"{name}.keras", eval_paths=[os.path.join(data_dir, "tiny_val.bin")],
        basic_model="r18_tiny", emb_shape=16, batch_size=batch_size, lr_base=0.02, lr_min=1e-4, lr_warmup_steps=1,
        num_workers=0, checkpoint_dir=out_dir, random_status=2, verbose=0, optimizer="sgd", lr_schedule="cosine",
        model_preset="arcface_torch", **kwargs,
    )
    losses = Losses(stop_after)
    try:
        history = trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 2}], callbacks=[losses])
    finally:
        trainer.close()
    kernel = trainer.parts.head.kernel.value
    return {
        "losses": losses.values,
        "tiny_val": history["tiny_val"],
        "spec": str(kernel.sharding.spec) if hasattr(kernel.sharding, "spec") else "",
        "kernel_devices": len(kernel.sharding.device_set),
        "shard_shape": list(kernel.addressable_shards[0].data.shape),
        "global_batch": trainer.global_batch_size,
    }


def placed_batch():
    """``batch_placer`` under the default data parallel: a batch split over the 8 devices, which Keras's own
    placement (``distribute_data_input``) passes through without another copy."""
    import numpy as np
    from keras.src.backend.jax.distribution_lib import distribute_data_input

    from keras_insightface.training.distribute import batch_placer, resolve_distribution

    distribution = resolve_distribution()
    images, labels = batch_placer(distribution)((np.zeros((16, 4, 4, 3), np.uint8), np.arange(16)))
    layout = distribution.get_data_layout(images.shape)
    again = distribute_data_input(images, layout, distribution.batch_dim_name)
    return {"spec": str(images.sharding.spec), "devices": len(images.sharding.device_set),
            "shard_rows": images.addressable_shards[0].data.shape[0], "labels_devices": len(labels.sharding.device_set),
            "passes_through": again is images}


def main(data_dir, out_dir):
    results = {"devices": jax.device_count(), "placed": placed_batch()}
    results["single"] = run(data_dir, out_dir, "single", 16, distribution=None)
    results["model_parallel"] = run(data_dir, out_dir, "mp", 2, stop_after=1, model_parallel=4)
    results["data_parallel"] = run(data_dir, out_dir, "dp", 2, stop_after=1)
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:])

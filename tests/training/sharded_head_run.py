"""Run on 8 virtual CPU devices (XLA_FLAGS set by the caller): one train step of a margin head, single-device
and class-sharded, printing JSON with the losses, the updated kernels' difference and the kernel sharding."""

import json
import sys

import keras_insightface  # noqa: F401

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_insightface.heads.margin import MarginHead  # noqa: E402
from keras_insightface.heads.norm_dense import NormDense  # noqa: E402
from keras_insightface.losses.cross_entropy import MarginCrossEntropy  # noqa: E402
from keras_insightface.losses.margin import ArcfaceLoss  # noqa: E402
from keras_insightface.training.distribute import class_sharded_distribution  # noqa: E402


def build(weights=None):
    embeddings = keras.Input((32,), name="embedding")
    labels = keras.Input((), dtype="int32", name="labels")
    hidden = keras.layers.Dense(32, name="neck")(embeddings)
    cos = NormDense(64, name="norm_dense")(hidden)
    logits = MarginHead(ArcfaceLoss(scale=16))([cos, labels])
    model = keras.Model([embeddings, labels], logits)
    if weights is not None:
        model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss=MarginCrossEntropy(), jit_compile=True)
    return model


def main(model_parallel):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 32)).astype("float32")
    y = rng.integers(0, 64, 16).astype("int32")
    single = build()
    weights = single.get_weights()
    loss_single = float(single.train_on_batch([x, y], y))
    distribution = class_sharded_distribution(model_parallel=model_parallel)
    with distribution.scope():
        sharded = build(weights)
        kernel = sharded.get_layer("norm_dense").kernel
        spec = str(kernel.value.sharding.spec)
        shards = len({s.device for s in kernel.value.addressable_shards})
        shard_shape = list(kernel.value.addressable_shards[0].data.shape)
        loss_sharded = float(sharded.train_on_batch([x, y], y))
    diffs = [float(np.abs(a - b).max()) for a, b in zip(single.get_weights(), sharded.get_weights())]
    print(json.dumps({"devices": jax.device_count(), "loss_single": loss_single, "loss_sharded": loss_sharded,
                      "max_weight_diff": max(diffs), "spec": spec, "shards": shards, "shard_shape": shard_shape}))


if __name__ == "__main__":
    main(int(sys.argv[1]))

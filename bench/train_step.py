"""Images/s of the compiled training step (backbone + NormDense + ArcFace head + SGD) on device-resident data.

GPU target (one H200): r50, batch 512, 93,431 classes, mixed_bfloat16 >= 7,000 img/s.

    python bench/train_step.py                 # r50, batch 512, mixed_bfloat16 (the GPU setting)
    python bench/train_step.py --cpu           # r18_tiny, batch 64, float32: a CPU-sized setting
    python bench/train_step.py --model r18 --batch-size 128 --classes 1000 --steps 20

Prints one ``RESULT`` line. The batch is put on the device once, so only the step is measured.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")


def measure_train_step(model_name, batch_size, classes, steps, precision="float32", emb_shape=512):
    """Images/s of ``steps`` compiled training steps on one device-resident batch; returns (img/s, loss, device)."""
    import jax
    import keras
    import numpy as np

    from keras_insightface.data.augment import FaceAugment
    from keras_insightface.heads.margin import MarginHead
    from keras_insightface.heads.norm_dense import NormDense
    from keras_insightface.losses.margin import ArcfaceLoss
    from keras_insightface.models import buildin_models
    from keras_insightface.training.model_setup import dtype_policy
    from keras_insightface.training.optimizers import L2SGD
    from keras_insightface.training.task import FaceTask

    with dtype_policy(precision):  # the same training model and compile arguments as Train
        basic = buildin_models(model_name, emb_shape=emb_shape, weights=None, preset="arcface_torch")
        margin = MarginHead(ArcfaceLoss(scale=64))
        model = FaceTask(basic, FaceAugment(seed=0), head=NormDense(classes), margin_head=margin)
    model.compile(optimizer=L2SGD(0.1), jit_compile=True)
    rng = np.random.default_rng(0)
    images = jax.device_put(rng.integers(0, 256, (batch_size, 112, 112, 3), dtype=np.uint8))
    labels = jax.device_put(rng.integers(0, classes, (batch_size,), dtype=np.int32))

    def batches():
        while True:
            yield images, labels

    data = batches()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # compile and warm up
    start = time.perf_counter()
    history = model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    seconds = time.perf_counter() - start
    return steps * batch_size / seconds, history.history["loss"][-1], jax.devices()[0].device_kind


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="r50")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=93431)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--cpu", action="store_true", help="CPU-sized preset: r18_tiny, batch 64, 1000 classes")
    args = parser.parse_args()
    if args.cpu:
        args.model, args.batch_size, args.classes, args.steps, args.precision = "r18_tiny", 64, 1000, 10, "float32"

    rate, loss, device = measure_train_step(args.model, args.batch_size, args.classes, args.steps, args.precision)
    print(
        f"RESULT train_step model={args.model} batch={args.batch_size} classes={args.classes} "
        f"precision={args.precision} device={device} steps={args.steps} img/s={rate:.1f} loss={loss:.3f}"
    )

if __name__ == "__main__":
    main()

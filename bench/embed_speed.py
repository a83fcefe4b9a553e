"""Embedding extraction speed for evaluation: the r50 forward with flip, jitted on device-resident batches, against
the project's own evaluation path (``inference.embed.embed_views``, ``VerificationSet.evaluate``).

    python bench/embed_speed.py --bin synthetic_val.bin          # GPU setting: r50, batch 1024, mixed_bfloat16
    python bench/embed_speed.py --cpu --bin synthetic_val.bin    # r18_tiny, batch 64, float32

Goal (issue 19): >= 30,000 img/s for r50, so that IJB-C's 469,375 images embed in < 20 s.

- ``jit``: one ``jax.jit`` of ``basic_model.stateless_call`` on the batch and its mirror image stacked into one
  forward (flip in the graph), the two views summed; ``--batches`` distinct uint8 batches already on the device,
  ``--steps`` calls dispatched back to back and waited for once. This is the model's own speed.
- ``embed_views``: the same images from host memory through ``embed_views(model, images, batch_size, flip=True)``,
  the loop every evaluation uses (``KerasEmbedder``: a batch to float32 on the host, ``predict_on_batch``, the mirror
  as a second call, results back to the host each time). ``embed_views_overhead`` = jit rate / this rate.
- ``verification``: ``VerificationSet(bin).evaluate(model, batch_size)`` on a ``.bin`` pack already decoded:
  embedding plus the accuracy, threshold and k-fold metrics, as ``eval_callback`` runs it at each epoch end.

Every path is called once before it is timed (compilation). The model's weights are random (speed only).
Prints ``RESULT embed_jit_img/s``, ``RESULT embed_ijbc_projected_s``, ``RESULT embed_views_img/s``,
``RESULT embed_views_overhead`` and ``RESULT embed_verification_img/s``.
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

IJBC_IMAGES = 469_375


def build_basic(model_name, precision, emb_shape=512):
    from keras_insightface.models import buildin_models
    from keras_insightface.training.model_setup import dtype_policy

    with dtype_policy(precision):
        return buildin_models(model_name, emb_shape=emb_shape, weights=None, preset="arcface_torch")


def flip_forward(model):
    """``jit(trainable, non_trainable, uint8 images (B, H, W, 3)) -> float32 (B, D)``: the embedding of each image
    plus that of its mirror, both views in one forward of ``2B`` images."""
    import jax
    import jax.numpy as jnp

    def forward(trainable, non_trainable, images):
        images = images.astype("float32")
        both = jnp.concatenate([images, images[:, :, ::-1]])
        out = model.stateless_call(trainable, non_trainable, both, training=False)[0].astype("float32")
        return out[: images.shape[0]] + out[images.shape[0] :]

    return jax.jit(forward)


def measure_jit(model, images, batch_size, steps):
    """Images/s of ``steps`` jitted flip forwards cycling over device copies of ``images`` (batches of batch_size)."""
    import jax

    forward = flip_forward(model)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    batches = [jax.device_put(images[start : start + batch_size]) for start in range(0, len(images), batch_size)]
    forward(trainable, non_trainable, batches[0]).block_until_ready()
    start = time.perf_counter()
    outputs = [forward(trainable, non_trainable, batches[step % len(batches)]) for step in range(steps)]
    jax.block_until_ready(outputs)
    return steps * batch_size / (time.perf_counter() - start)


def measure_embed_views(model, images, batch_size):
    """Images/s of ``embed_views`` (flip) over the host ``images``, after one warm-up batch."""
    from keras_insightface.inference.embed import embed_views

    embed_views(model, images[:batch_size], batch_size, flip=True)
    start = time.perf_counter()
    views = embed_views(model, images, batch_size, flip=True)
    seconds = time.perf_counter() - start
    if len(views) != 2 or len(views[0]) != len(images):
        raise RuntimeError(f"embed_views returned {len(views)} views of {len(views[0])} rows for {len(images)} images")
    return len(images) / seconds


def measure_verification(model, bin_path, batch_size):
    """``(images/s, accuracy)`` of ``VerificationSet(bin_path).evaluate`` (decoding left out), after a warm-up."""
    from keras_insightface.evaluation.verification import VerificationSet

    pack = VerificationSet(bin_path)
    pack.evaluate(model, batch_size)
    start = time.perf_counter()
    result = pack.evaluate(model, batch_size)
    return len(pack.images) / (time.perf_counter() - start), result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", required=True, help="a .bin verification pack (the generated synthetic_val.bin)")
    parser.add_argument("--model", default="r50")
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches (device copies / host images)")
    parser.add_argument("--steps", type=int, default=60, help="timed jitted calls")
    parser.add_argument("--cpu", action="store_true", help="CPU-sized: r18_tiny, batch 64, float32, 3 batches")
    args = parser.parse_args()
    if args.cpu:
        args.model, args.precision, args.batch_size, args.batches, args.steps = "r18_tiny", "float32", 64, 3, 6

    import jax
    import numpy as np

    device = jax.devices()[0]
    print(f"embed: {args.model} {args.precision} batch {args.batch_size} (x2 with flip) on "
          f"{device.platform}:{device.device_kind}")
    model = build_basic(args.model, args.precision)
    images = np.random.default_rng(0).integers(0, 256, (args.batches * args.batch_size, 112, 112, 3), dtype=np.uint8)

    rate = measure_jit(model, images, args.batch_size, args.steps)
    print(f"RESULT embed_jit_img/s {rate:.1f} img/s")
    print(f"RESULT embed_ijbc_projected_s {IJBC_IMAGES / rate:.1f} s")
    views_rate = measure_embed_views(model, images, args.batch_size)
    print(f"RESULT embed_views_img/s {views_rate:.1f} img/s")
    print(f"RESULT embed_views_overhead {rate / views_rate:.2f} x")
    pack_rate, result = measure_verification(model, args.bin, args.batch_size)
    print(f"verification of {args.bin}: {result}")
    print(f"RESULT embed_verification_img/s {pack_rate:.1f} img/s")


if __name__ == "__main__":
    main()

"""End-to-end training throughput (``Train`` on a generated ``.rec``) against the bare compiled step.

Goal: end-to-end images/s >= 0.95 x the bare step (``bench/train_step.py``) for the same model, batch, classes
and precision, i.e. the loader, augmentation, callbacks, evaluation and checkpoints cost <= 5%.

    python bench/train.py                 # r50, batch 512, mixed_bfloat16, 20,000 classes x 8 images (the GPU setting)
    python bench/train.py --cpu           # r18_tiny, batch 64, float32, 64 classes x 12 images (2 CPU cores, < 3 min)
    python bench/train.py --cpu --random-status 0 --eval-every 100   # isolate augmentation / evaluation

Data: ``demo.synthetic.generate_dataset`` (the demo's generator, rendering in one forked process per core): a
training ``.rec`` of ``--classes`` identities x ``--images-per-class`` faces and a ``.bin`` pack of
``--eval-pairs`` genuine and as many impostor pairs from held-out identities. Both are generated once and cached under
``--data-dir`` (default ``<tmp>/keras_insightface_bench_train``), keyed by their settings. The GPU default is
20,000 classes x 8 images = 160,000 images (312 steps of 512 per epoch): the 93,431
identities of the step's GPU target (MS1MV3) are not worth rendering for a throughput figure, and the bare step is
measured with the same 20,000 classes.

Measurement: ``Train(...).train([{"loss": ArcfaceLoss(scale=64), "epoch": E}])`` runs the whole engine: ``.rec``
read + JPEG decode in ``--workers`` grain processes, ``FaceAugment(random_status)`` in the compiled step, the
engine's callbacks (throughput, NaN guard, history JSON, best-model saving, the full-state checkpoint at every
epoch end) and evaluation of the ``.bin`` pack every ``--eval-every`` epochs. A last Keras callback (passed through
``train(callbacks=...)``, so it runs after all the built-in ones) records the wall clock at each epoch end. The
end-to-end figure is images of epochs 2..E / wall time from the end of epoch 1 to the end of epoch E: epoch 1
(XLA compilation of the step, first evaluation compiling the predict function, loader start-up) is left out,
everything the steady state repeats (steps, data, evaluation, saving) is in. ``loop img/s`` is the engine's own
``img/s`` history key over the same epochs (the ``fit`` batches only, before the epoch-end callbacks); the gap
between the two is the epoch-end work (evaluation + saving), ``epoch_end_s`` per epoch. ``projected_ratio``
puts that fixed per-epoch cost on an epoch of ``--project-images`` (MS1MV3's 5,179,510 by default) at the loop
rate: the short benchmark epochs overstate its share.

Bare step: ``measure_train_step`` (``bench/train_step.py``) times the bare step on one device-resident batch with
the same model / batch / classes / precision; its augmentation is ``FaceAugment()`` (flip only), so the
augmentation of ``--random-status`` > 0 is charged to the end-to-end side. ``engine_step`` times ``Train``'s own
compiled model (same augmentation, losses and optimizer) on one device-resident batch without callbacks, median of
3 runs: ``step_ratio`` = end-to-end / engine step is what the loader, the callbacks and the epoch-end work cost,
``loop_step_ratio`` = loop / engine step the loader and the per-batch callbacks alone.

Prints ``EPOCH`` lines and one ``RESULT`` line.
"""

import argparse
import math
import os
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

def make_data(data_dir, classes, images_per_class, eval_pairs, seed=0):
    """Generate (or reuse) the synthetic ``.rec`` and its ``.bin`` pack with ``demo.synthetic.generate_dataset``,
    rendered in one forked process per core; returns ``(train folder, .bin path, seconds spent generating)``."""
    from keras_insightface.demo.synthetic import generate_dataset

    out = os.path.join(data_dir, f"synthetic_{classes}x{images_per_class}_pairs{eval_pairs}_seed{seed}")
    start = time.perf_counter()
    # held-out identities for the pack: 6 images each, so C(6, 2) = 15 genuine pairs per identity
    paths = generate_dataset(out, num_identities=classes, images_per_identity=images_per_class,
                             num_val_identities=max(10, math.ceil(eval_pairs / 5)), num_pairs=2 * eval_pairs,
                             seed=seed, processes=os.cpu_count() or 1)
    return paths["train"], paths["val"], time.perf_counter() - start


def _epoch_timer():
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall clock at train begin and after each epoch's callbacks (it is the last callback). No batch hooks,
        so it does not change how Keras dispatches the per-batch callbacks."""

        def on_train_begin(self, logs=None):
            self.ends = [time.perf_counter()]

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())

    return EpochTimer()


def measure_end_to_end(train_dir, bin_path, model_name, batch_size, precision, epochs, workers, random_status,
                       eval_every, verbose=0):
    """Run ``Train`` for ``epochs`` epochs; returns a dict of the steady-state figures (epochs 2..E) and per epoch."""
    from keras_insightface import ArcfaceLoss, Train

    with tempfile.TemporaryDirectory(prefix="bench_train_ckpt") as checkpoint_dir:
        trainer = Train(
            train_dir, "bench_train.keras", eval_paths=[bin_path], basic_model=model_name, batch_size=batch_size,
            mixed_precision=precision, random_status=random_status, num_workers=workers,
            checkpoint_dir=checkpoint_dir, eval_freq=eval_every, verbose=verbose,
        )
        timer = _epoch_timer()
        try:
            history = trainer.train([{"loss": ArcfaceLoss(scale=64), "epoch": epochs}], callbacks=[timer])
        finally:
            trainer.close()
        steps, classes = trainer.loader.steps_per_epoch, trainer.num_classes
        train_model = trainer.parts.train_model
    walls = [b - a for a, b in zip(timer.ends, timer.ends[1:])]
    if len(walls) < epochs or len(history.get("img/s", [])) < epochs:
        raise RuntimeError(f"training stopped after {len(walls)} of {epochs} epochs (loss not finite?): {history}")
    images = steps * batch_size
    loops = [images / rate for rate in history["img/s"]]
    return {
        "train_model": train_model, "steps": steps, "classes": classes, "walls": walls, "loops": loops,
        "loss": history["loss"], "eval": history.get(os.path.splitext(os.path.basename(bin_path))[0]),
        "e2e": images * (epochs - 1) / sum(walls[1:]),
        "loop": images * (epochs - 1) / sum(loops[1:]),
    }


def measure_engine_step(train_model, batch_size, classes, steps, repeats=3):
    """Images/s of ``Train``'s own compiled training model (its augmentation, losses, optimizer) on one
    device-resident batch with no callbacks: the end-to-end run without the loader and the engine's callbacks.
    Median of ``repeats`` runs of ``steps`` steps (a shared machine's load comes and goes)."""
    import statistics

    import jax
    import numpy as np

    rng = np.random.default_rng(0)
    images = jax.device_put(rng.integers(0, 256, (batch_size, 112, 112, 3), dtype=np.uint8))
    labels = jax.device_put(rng.integers(0, classes, (batch_size,), dtype=np.int32))
    def batches():
        while True:
            yield images, labels

    data = batches()
    train_model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)  # the step is compiled already; warm up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        train_model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="r50")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--classes", type=int, default=20000, help="identities in the generated training set")
    parser.add_argument("--images-per-class", type=int, default=8)
    parser.add_argument("--precision", default="mixed_bfloat16")
    parser.add_argument("--epochs", type=int, default=3, help="epochs run; the first (compilation) is not timed")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: the project's)")
    parser.add_argument("--random-status", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=1, help="evaluate the .bin pack every N epochs")
    parser.add_argument("--eval-pairs", type=int, default=500, help="genuine (and impostor) pairs in the .bin")
    parser.add_argument("--bare-steps", type=int, default=50, help="steps of the bare-step measurement")
    parser.add_argument("--project-images", type=int, default=5179510,
                        help="epoch size for the projected ratio (default MS1MV3: 5,179,510 images, 93,431 ids)")
    parser.add_argument("--data-dir", default=os.path.join(tempfile.gettempdir(), "keras_insightface_bench_train"))
    parser.add_argument("--verbose", type=int, default=0, help="Train's progress bar (0: none)")
    parser.add_argument("--cpu", action="store_true",
                        help="CPU-sized preset: r18_tiny, batch 64, float32, 64 classes x 12 images, 6 epochs")
    args = parser.parse_args()
    if args.cpu:
        args.model, args.batch_size, args.precision = "r18_tiny", 64, "float32"
        args.classes, args.images_per_class, args.epochs, args.eval_pairs, args.bare_steps = 64, 12, 6, 50, 15
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch (compilation) is not timed")

    # before anything imports grain / JAX: the renderer forks its pool
    train_dir, bin_path, made = make_data(args.data_dir, args.classes, args.images_per_class, args.eval_pairs)
    from keras_insightface.data.loader import default_num_workers

    workers = default_num_workers() if args.workers is None else args.workers
    print(f"data: {train_dir} ({args.classes} x {args.images_per_class} images), {bin_path}"
          + f" ready in {made:.0f} s")

    start = time.perf_counter()
    e2e = measure_end_to_end(train_dir, bin_path, args.model, args.batch_size, args.precision, args.epochs, workers,
                             args.random_status, args.eval_every, args.verbose)
    e2e_seconds = time.perf_counter() - start
    images = e2e["steps"] * args.batch_size
    for epoch, (wall, loop) in enumerate(zip(e2e["walls"], e2e["loops"]), 1):
        evaluated = e2e["eval"] is not None and epoch % args.eval_every == 0
        print(f"EPOCH {epoch} wall_s={wall:.2f} loop_s={loop:.2f} epoch_end_s={wall - loop:.2f} "
              f"wall_img/s={images / wall:.1f} loop_img/s={images / loop:.1f} loss={e2e['loss'][epoch - 1]:.3f}"
              + (f" val={e2e['eval'][epoch // args.eval_every - 1]:.4f}" if evaluated else "")
              + ("  (not timed: compilation)" if epoch == 1 else ""))

    import jax
    import keras

    step = measure_engine_step(e2e.pop("train_model"), args.batch_size, e2e["classes"], args.bare_steps)
    keras.backend.clear_session()
    import train_step

    start = time.perf_counter()
    bare = train_step.measure_train_step(args.model, args.batch_size, e2e["classes"], args.bare_steps, args.precision)[0]
    bare_seconds = time.perf_counter() - start
    reference = bare
    # the epoch-end work (evaluation, saving) is a fixed cost per epoch: its share at a real dataset's epoch size
    epoch_end = sum(wall - loop for wall, loop in zip(e2e["walls"][1:], e2e["loops"][1:])) / (args.epochs - 1)
    projected = args.project_images / (args.project_images / e2e["loop"] + epoch_end)
    print(
        f"RESULT train model={args.model} batch={args.batch_size} classes={e2e['classes']} "
        f"images={e2e['steps'] * args.batch_size}/epoch precision={args.precision} "
        f"device={jax.devices()[0].device_kind} workers={workers} random_status={args.random_status} "
        f"eval_every={args.eval_every} epochs={args.epochs} e2e_img/s={e2e['e2e']:.1f} loop_img/s={e2e['loop']:.1f} "
        f"engine_step_img/s={step:.1f} bare_img/s={bare:.1f} ratio={e2e['e2e'] / reference:.3f} "
        f"step_ratio={e2e['e2e'] / step:.3f} loop_step_ratio={e2e['loop'] / step:.3f} (goal ratio >= 0.95) "
        f"epoch_end_s={epoch_end:.2f} projected_ratio@{args.project_images}={projected / reference:.3f} "
        f"train_s={e2e_seconds:.0f} bare_s={bare_seconds:.0f}"
    )


if __name__ == "__main__":
    main()

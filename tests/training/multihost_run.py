"""One host of a 2-host ``Train`` run on CPU (2 virtual devices per host, gloo collectives), for test_distribute.py.

    python tests/training/multihost_run.py PROCESS_ID PORT DATA_DIR OUT_DIR MODE COMPILATION_CACHE_DIR

MODE ``full`` trains 2 epochs; ``stop`` is the same run where host 1 alone gets SIGTERM during epoch 2 (both hosts
must stop at the same batch and write one checkpoint); ``resume`` continues it. The head kernel is split over all
4 devices (``model_parallel=4``), so it spans both hosts. Prints one JSON line per host: per-batch losses, the
kernel's sharding, and (``full``) embeddings of the eval pack's first images computed across both hosts.
"""

import functools
import json
import os
import signal
import sys

import keras_insightface  # noqa: F401  (JAX backend)


def main(process_id, port, data_dir, out_dir, mode, cache_dir):
    # before JAX starts its CPU client; the test run's own flags kept
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2"
    from keras_insightface.training.distribute import initialize_hosts

    initialize_hosts(f"localhost:{port}", 2, int(process_id))
    import jax
    import keras

    from keras_insightface.evaluation.verification import VerificationSet
    from keras_insightface.inference.embed import embed_views
    from keras_insightface.losses.margin import ArcfaceLoss
    from keras_insightface.training import callbacks as cbs
    from keras_insightface.training.train import Train

    jax.config.update("jax_compilation_cache_dir", cache_dir)  # the 3 runs compile the same functions: compile once
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    cbs.StopOnSignal = functools.partial(cbs.StopOnSignal, sync_every=2)  # hosts compare stop requests every 2 batches

    class Record(keras.callbacks.Callback):
        """Per-batch running losses; in ``stop`` mode host 1 signals itself at epoch 2, batch 3."""

        def __init__(self):
            super().__init__()
            self.losses, self.epoch = [], 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))
            if mode == "stop" and process_id == "1" and self.epoch == 1 and batch == 2:
                os.kill(os.getpid(), signal.SIGTERM)

    trainer = Train(
        os.path.join(data_dir, "rec"), "multihost.keras", eval_paths=[os.path.join(data_dir, "tiny_val.bin")],
        basic_model="r18_tiny", emb_shape=16, batch_size=2, lr_base=0.02, lr_min=1e-4, lr_warmup_steps=1,
        num_workers=0, checkpoint_dir=out_dir, random_status=2, verbose=0, model_parallel=4,
    )
    record = Record()
    try:
        history = trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 2}], resume=mode == "resume",
                                callbacks=[record])
    finally:
        trainer.close()
    kernel = trainer.parts.head.kernel.value
    result = {
        "process": jax.process_index(), "devices": jax.device_count(), "losses": record.losses, "history": history,
        "spec": str(kernel.sharding.spec), "addressable": kernel.is_fully_addressable,
        "global_batch": trainer.global_batch_size, "host_batch": trainer.loader.batch_size,
    }
    if mode == "full":
        images = VerificationSet(os.path.join(data_dir, "tiny_val.bin")).images[:16]
        result["embeddings"] = embed_views(trainer.eval_callbacks[0].embedder, images, 8, flip=False)[0].tolist()
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:7])

"""The seed's ``samples_per_mining``: every stage trains on ``[anchor, positive, negative]`` triples mined each
epoch with the current model (``data/triplet_mining.py``, ``run_data.mine_data``), the layout the seed's
``OfflineTripletLoss`` / ``OfflineArcTripletLoss`` read."""

import numpy as np
import pytest

from keras_insightface import ArcfaceLoss, Train, losses
from keras_insightface.data.triplet_mining import hardest_triplets, mining_sample, mining_size, triplet_order


def test_mining_sample_takes_whole_identity_groups():
    labels = np.repeat(np.arange(6), [9, 8, 4, 3, 5, 8])
    rng = np.random.default_rng(0)
    sample = mining_sample(labels, 4, mining_size(0.5, len(labels)), rng)  # half of 37 images: 18 -> 4 groups
    assert len(sample) == 16 and len(set(sample.tolist())) == 16
    counts = np.bincount(labels[sample], minlength=6)
    assert (counts % 4 == 0).all() and counts[3] == 0  # whole groups; an identity of 3 images never sampled
    assert mining_size(24, 37) == 24 and mining_size(100, 37) == 37


def test_hardest_triplets_equal_a_brute_force_search():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(50, 8)).astype("float32")
    labels = rng.integers(0, 6, 50)
    positives, negatives = hardest_triplets(emb, labels, block=7)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for anchor in range(50):
        cos = unit @ unit[anchor]
        same = [j for j in range(50) if labels[j] == labels[anchor]]
        other = [j for j in range(50) if labels[j] != labels[anchor]]
        assert positives[anchor] == min(same, key=lambda j: cos[j])
        assert negatives[anchor] == max(other, key=lambda j: cos[j])
    order = triplet_order(np.arange(100, 150), positives, negatives).reshape(-1, 3)
    assert (order[:, 0] == np.arange(100, 150)).all() and (order[:, 1] == 100 + positives).all()


def test_offline_triplet_losses_are_the_seeds_formulas():
    emb = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0]], "float32")
    labels = np.zeros(6)
    cos_ap, cos_an = np.array([0.8, 0.6]), np.array([0.6, 0.0])
    seed = np.maximum(cos_an - cos_ap + 0.35, 0).mean()  # the seed's OfflineTripletLoss: neg_dist - pos_dist + alpha
    assert float(losses.OfflineTripletLoss(alpha=0.35)(labels, emb)) == pytest.approx(seed, rel=1e-5)
    margin = np.cos(np.arccos(cos_ap) + 0.35)
    seed_arc = np.maximum(cos_an - np.where(margin > np.cos(np.pi - 0.35), margin, -2 - margin), 0).mean()
    assert float(losses.OfflineArcTripletLoss(alpha=0.35)(labels, emb)) == pytest.approx(seed_arc, rel=1e-5)


def test_train_with_samples_per_mining_reads_mined_triples(tiny_data, tmp_path, monkeypatch):
    from keras_insightface.training import run_data, runner

    mined = []
    monkeypatch.setattr(runner, "mine_data", lambda run, epoch: mined.append(epoch) or run_data.mine_data(run, epoch))
    trainer = Train(str(tiny_data / "rec"), "mined.keras", basic_model="r18_tiny", emb_shape=16, batch_size=16,
                    num_workers=0, checkpoint_dir=str(tmp_path), verbose=0, lr_base=0.01, samples_per_mining=32,
                    save_full_model=False)
    try:
        trainer.train([{"loss": losses.OfflineArcTripletLoss(), "epoch": 2}])
        assert mined == [1]  # epoch 0 mined when the stage started, epoch 1 mined again with the trained model
        assert not np.array_equal(run_data.mined_order(trainer.run, 0), run_data.mined_order(trainer.run, 1))
        assert trainer.loader.batch_size == 15 and trainer.loader.steps_per_epoch == 96 // 15
        images, labels, *_ = next(iter(trainer.loader.dataset))
        triples = np.asarray(labels).reshape(-1, 3)
        assert (triples[:, 0] == triples[:, 1]).all() and (triples[:, 0] != triples[:, 2]).all()
        trainer.train([{"loss": ArcfaceLoss(scale=16), "epoch": 1}])  # the seed: every stage reads mined triples
    finally:
        trainer.close()
    history = trainer.history
    assert len(history["loss"]) == 3 and np.isfinite(history["loss"]).all()
    plain = Train(str(tiny_data / "rec"), "plain.keras", basic_model="r18_tiny", emb_shape=16, batch_size=16,
                  num_workers=0, checkpoint_dir=str(tmp_path), verbose=0)
    try:
        with pytest.raises(ValueError, match="Stage 0: OfflineTripletLoss reads batches of offline-mined"):
            plain.train([{"loss": losses.OfflineTripletLoss(), "epoch": 1}])
    finally:
        plain.close()


def test_a_mined_run_stopped_mid_epoch_resumes_from_its_checkpoint(tiny_data, tmp_path, monkeypatch):
    """SIGTERM in epoch 1 of a mined run leaves a checkpoint; resume mines that epoch again with the restored
    model, trains the epoch's remaining batches and the next epoch, and the history is whole."""
    import os
    import signal

    import keras

    from keras_insightface.training import run_data, runner

    class Terminate(keras.callbacks.Callback):
        sent = False

        def on_train_batch_end(self, batch, logs=None):
            if batch == 2 and not self.sent:
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)

    options = dict(basic_model="r18_tiny", emb_shape=16, batch_size=16, num_workers=0, checkpoint_dir=str(tmp_path),
                   verbose=0, lr_base=0.01, samples_per_mining=32, save_full_model=False)
    schedule = [{"loss": losses.OfflineTripletLoss(), "epoch": 2}]
    trainer = Train(str(tiny_data / "rec"), "resumed.keras", **options)
    try:
        trainer.train(schedule, callbacks=[Terminate()])
    finally:
        trainer.close()
    assert trainer.stop_reason is not None and len(trainer.history.get("loss", [])) == 0
    mined = []
    monkeypatch.setattr(runner, "mine_data", lambda run, epoch: mined.append(epoch) or run_data.mine_data(run, epoch))
    again = Train(str(tiny_data / "rec"), "resumed.keras", **options)
    try:
        again.train(schedule, resume=True)
    finally:
        again.close()
    assert mined == [0, 1]  # epoch 0 mined again after the restore, epoch 1 at its start
    assert len(again.history["loss"]) == 2 and np.isfinite(again.history["loss"]).all()

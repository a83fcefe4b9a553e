"""eval_callback with the seed's signature and meaning: positional call, standalone ``on_epoch_end`` printing the
seed's line and keeping its attributes, best basic model saved on improvement, ``eval_freq`` > 1 evaluating
mid-epoch inside ``fit``."""

import glob
import math
import os
import re

import keras
import numpy as np
import pytest

from keras_insightface.data.binpack import write_bin
from keras_insightface.evaluation.verification import eval_callback, kfold_accuracy
from keras_insightface.saving import load_model
from tests.conftest import jpeg

SEED_LINE = re.compile(
    r">>>> (\w+) evaluation max accuracy: (\d\.\d{6}), thresh: (-?\d\.\d{6}), previous max accuracy: (\d\.\d{6})"
)


def _pack(path, pairs=20, seed=3):
    """``pairs`` pairs of 4x4 images (10 impostors or more, as real packs): genuine pairs are two noisy copies of
    a base, impostor pairs two different bases."""
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 256, (pairs, 4, 4, 3))
    images, issame = [], []
    for i in range(pairs):
        same = i % 2 == 0
        a, b = bases[i], bases[i] if same else bases[(i + 5) % pairs]
        images += [jpeg(np.clip(view + rng.normal(0, 3, view.shape), 0, 255)) for view in (a, b)]
        issame.append(same)
    write_bin(path, images, issame)
    return str(path)


def _linear(size=4, dims=16, seed=4):
    inputs = keras.Input((size, size, 3))
    dense = keras.layers.Dense(dims, use_bias=False, name="emb")
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)), name="embedding")
    dense.set_weights([np.random.default_rng(seed).normal(size=(size * size * 3, dims)).astype("float32")])
    return model


def _seed_metric(embs, issame):
    """The seed's evals.py metric, restated: cosine of pairs, thresholds from the top 10% impostor scores."""
    embs = embs / np.linalg.norm(embs, axis=1, keepdims=True)
    dists = (embs[::2] * embs[1::2]).sum(1)
    tt, ff = np.sort(dists[issame]), np.sort(dists[~issame])
    t_steps = int(0.1 * ff.shape[0])
    acc_count = np.array([(tt > vv).sum() + (ff <= vv).sum() for vv in ff[-t_steps:]])
    best = int(np.argmax(acc_count))
    return acc_count[best] / dists.shape[0], ff[best - t_steps]


def test_seed_positional_call_and_standalone_on_epoch_end(real_faces, capsys):
    pack = str(real_faces / "small_lfw_pairs.bin")
    inputs = keras.Input((112, 112, 3))
    x = keras.layers.Rescaling(1 / 128.0, offset=-127.5 / 128)(inputs)
    x = keras.layers.Conv2D(8, 8, strides=8, kernel_initializer=keras.initializers.GlorotNormal(seed=1))(x)
    basic = keras.Model(inputs, keras.layers.Flatten()(x))
    # the seed's order: basic_model, test_bin_file, batch_size, save_model, eval_freq, flip, PCA_acc
    cb = eval_callback(basic, pack, 16, None, 1, True, True)
    assert (cb.batch_size, cb.save_model, cb.eval_freq, cb.flip, cb.PCA_acc) == (16, None, 1, True, True)
    assert cb.test_names == "small_lfw_pairs" and cb.steps == math.ceil(40 / 16)
    assert (cb.max_accuracy, cb.cur_acc, cb.acc_thresh) == (0.0, 0.0, 0.0)
    assert cb.test_issame.tolist() == [True, False] * 10

    cb.on_epoch_end(0)  # no fit, no logs: evaluates and prints as the seed
    out = capsys.readouterr().out
    name, accuracy, thresh, previous = SEED_LINE.search(out).groups()
    assert name == "small_lfw_pairs" and previous == "0.000000"
    want_accuracy, want_thresh = _seed_metric(cb.embs, cb.test_issame)
    assert (cb.cur_acc, cb.acc_thresh) == pytest.approx((want_accuracy, want_thresh))
    assert (float(accuracy), float(thresh)) == pytest.approx((want_accuracy, want_thresh), abs=1e-6)
    assert cb.max_accuracy == cb.cur_acc and ">>>> Improved = " in out
    mean, std = kfold_accuracy(cb.embs[0::2], cb.embs[1::2], cb.test_issame)  # PCA_acc: the 10-fold printout
    assert f"10-fold accuracy = {mean:f} \u00b1 {std:f}" in out
    assert np.all(np.diff(cb.tt) >= 0) and len(cb.tt) == 10 and len(cb.ff) == 10
    assert cb.acc_thresh in cb.ff  # the threshold is an impostor score, as in the seed

    cb.on_epoch_end()  # the seed's defaults: epoch 0, no logs
    assert SEED_LINE.search(capsys.readouterr().out).group(4) == f"{cb.max_accuracy:f}"


def test_save_model_writes_the_best_basic_model_on_improvement_only(tmp_path, monkeypatch, capsys):
    pack = _pack(tmp_path / "toy.bin")
    model = _linear()
    weights = model.get_layer("emb").get_weights()
    zeros = [np.zeros_like(weights[0])]
    cb = eval_callback(model, pack, save_model=str(tmp_path / "run"))

    model.get_layer("emb").set_weights(zeros)  # every score 0: accuracy 0.5 (the impostors)
    cb.on_epoch_end(0)
    assert cb.cur_acc == 0.5
    assert glob.glob(str(tmp_path / "run_basic_*")) == [str(tmp_path / "run_basic_toy_epoch_1_0.500000.keras")]

    model.get_layer("emb").set_weights(weights)
    cb.on_epoch_end(1)
    assert cb.cur_acc == 1.0 and cb.max_accuracy == 1.0
    best = str(tmp_path / "run_basic_toy_epoch_2_1.000000.keras")
    assert glob.glob(str(tmp_path / "run_basic_*")) == [best]  # the previous best is replaced
    assert f">>>> Saving model to: {best}" in capsys.readouterr().out

    model.get_layer("emb").set_weights(zeros)
    cb.on_epoch_end(2)  # 0.5 < 1.0: not improved, nothing written
    assert cb.cur_acc == 0.5 and cb.max_accuracy == 1.0
    assert glob.glob(str(tmp_path / "run_basic_*")) == [best]
    assert "Saving model" not in capsys.readouterr().out
    np.testing.assert_array_equal(load_model(best).get_layer("emb").get_weights()[0], weights[0])

    monkeypatch.chdir(tmp_path)  # a name without a folder goes to checkpoints/, as in the seed
    model.get_layer("emb").set_weights(weights)
    eval_callback(model, pack, 64, "bare", verbose=False).on_epoch_end(4)
    assert os.listdir(tmp_path / "checkpoints") == ["bare_basic_toy_epoch_5_1.000000.keras"]

    with pytest.raises(ValueError, match="save_model='x' needs a Keras basic_model"):
        eval_callback(lambda batch: np.ones((len(batch), 4)), pack, save_model="x")


class _Spy:
    """Records the optimizer step each evaluation of ``cb`` sees (after the callback synced the JAX state)."""

    def __init__(self, cb, optimizer):
        self.steps, embed = [], cb.dataset.embed

        def spy(*args, **kwargs):
            self.steps.append(int(np.asarray(optimizer.iterations)))
            return embed(*args, **kwargs)

        cb.dataset.embed = spy


def _fit(cb, basic, epochs=2, steps=6):
    train = keras.Sequential([basic, keras.layers.Dense(4)])
    train.compile(optimizer=keras.optimizers.SGD(0.01), loss=keras.losses.SparseCategoricalCrossentropy(True))
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (2 * steps, 4, 4, 3)).astype("float32"), rng.integers(0, 4, 2 * steps)
    spy = _Spy(cb, train.optimizer)
    history = train.fit(x, y, batch_size=2, epochs=epochs, callbacks=[cb], verbose=0, shuffle=False)
    return spy.steps, history.history


def test_eval_freq_above_one_also_evaluates_mid_epoch_in_fit(tmp_path, capsys):
    pack = _pack(tmp_path / "toy.bin")
    cb = eval_callback(_linear(), pack, 64, None, 2)
    seen, history = _fit(cb, cb.basic_model)
    # the seed: after each batch whose 0-based index is a positive multiple of 2 (indices 2 and 4: 3 and 5 batches
    # done; index 0 skipped), and at every epoch end (6 batches)
    assert seen == [3, 5, 6, 9, 11, 12]
    assert [(epoch, batch) for epoch, batch, _ in cb.step_results] == [(1, 2), (1, 4), (2, 2), (2, 4)]
    assert len(SEED_LINE.findall(capsys.readouterr().out)) == 6
    xnorms = [result["xnorm"] for _, _, result in cb.step_results]
    assert len(set(np.round(xnorms, 6))) == 4  # evaluated with the weights of that moment
    for key in ("toy", "toy_thresh", "toy_kfold", "toy_kfold_std"):  # the epoch logs the trainer's history reads
        assert len(history[key]) == 2
    assert history["toy"][-1] == cb.cur_acc

    every = eval_callback(_linear(), pack, eval_every_steps=2, verbose=False)  # ours: counted in batches done
    seen, _ = _fit(every, every.basic_model)
    assert seen == [2, 4, 6, 8, 10, 12]
    assert [(epoch, batch) for epoch, batch, _ in every.step_results] == [(1, 2), (1, 4), (2, 2), (2, 4)]

    once = eval_callback(_linear(), pack, verbose=False)  # eval_freq 1: epoch ends only
    seen, _ = _fit(once, once.basic_model)
    assert seen == [6, 12] and once.step_results == []


def test_epoch_freq_nan_embeddings_and_bad_keywords(tmp_path, capsys):
    pack = _pack(tmp_path / "toy.bin")
    model = _linear()
    cb = eval_callback(model, pack, epoch_freq=2)
    logs = {"loss": 1.0}
    cb.on_epoch_end(0, logs)
    assert logs == {"loss": 1.0} and cb.embs is None
    cb.on_epoch_end(1, logs)
    assert logs["toy"] == cb.cur_acc == 1.0 and logs["toy_thresh"] == cb.acc_thresh
    capsys.readouterr()

    model.get_layer("emb").set_weights([np.full((48, 16), np.nan, "float32")])
    logs = {"loss": 1.0}
    cb.on_epoch_end(3, logs)  # non-finite embeddings: reported, nothing changes (the seed's "NAN in embs")
    assert "NaN or Inf in the embeddings" in capsys.readouterr().out
    assert logs == {"loss": 1.0} and cb.cur_acc == 1.0 and cb.max_accuracy == 1.0

    with pytest.raises(ValueError, match="eval_freq=2 and eval_every_steps=3"):
        eval_callback(model, pack, eval_freq=2, eval_every_steps=3)
    with pytest.raises(ValueError, match="eval_freq must be an integer >= 1, received 0"):
        eval_callback(model, pack, eval_freq=0)


def test_half_split_weighted_cosine_similarity_is_the_seeds_formula():
    from keras_insightface.evals import half_split_weighted_cosine_similarity

    rng = np.random.default_rng(0)
    aa, bb = rng.normal(size=(3, 8)), rng.normal(size=(4, 8))
    got = half_split_weighted_cosine_similarity(aa, bb)
    for i in range(3):
        for j in range(4):
            top = aa[i, :4] @ bb[j, :4]
            bottom = aa[i, 4:] @ bb[j, 4:]
            weight = (np.linalg.norm(aa[i, :4]) * np.linalg.norm(bb[j, :4])
                      + np.linalg.norm(aa[i, 4:]) * np.linalg.norm(bb[j, 4:]))
            assert got[i, j] == pytest.approx((top + bottom) / weight)
    scale = np.concatenate([np.full(4, 2.0), np.full(4, 2.0)])  # equal half norms: the plain cosine
    same = half_split_weighted_cosine_similarity(aa[:1] * 0 + scale, bb[:1] * 0 + scale)
    assert same[0, 0] == pytest.approx(1.0)

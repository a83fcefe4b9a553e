"""Partial FC: full head at sample_rate 1, positives always sampled, only sampled classes updated."""

import keras_insightface  # noqa: F401  (selects the JAX backend before keras is imported)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_insightface.heads.margin import MarginHead  # noqa: E402
from keras_insightface.heads.norm_dense import NormDense  # noqa: E402
from keras_insightface.heads.partial_fc import PartialFC  # noqa: E402
from keras_insightface.losses.margin import ArcfaceLoss  # noqa: E402
from keras_insightface.training.optimizers import L2SGD  # noqa: E402
from keras_insightface.training.task import FaceTask  # noqa: E402

RNG = np.random.default_rng(0)
EMBEDDINGS = RNG.normal(size=(8, 16)).astype("float32")
LABELS = np.array([3, 3, 17, 42, 42, 42, 77, 99], "int32")


def full_cos(embeddings, kernel):
    x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    return x @ (kernel / np.linalg.norm(kernel, axis=0, keepdims=True))


def test_sample_rate_one_is_the_full_cosine_head():
    head, dense = PartialFC(100, sample_rate=1.0), NormDense(100)
    cos, labels = head([EMBEDDINGS, LABELS])
    dense.build((None, 16))
    dense.set_weights(head.get_weights())
    np.testing.assert_allclose(np.asarray(cos), np.asarray(dense(EMBEDDINGS)), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(labels), LABELS)


def test_sample_keeps_the_positives_and_remaps_labels():
    head = PartialFC(100, sample_rate=0.1, seed=1)
    head.build([(None, 16), (None,)])
    kernel = np.asarray(head.kernel)
    expected = full_cos(EMBEDDINGS, kernel)
    recorded, draw = [], head.sample
    head.sample = lambda labels: recorded.append(draw(labels)) or recorded[-1]  # the sample each call uses
    samples = []
    for _ in range(5):
        cos, labels = map(np.asarray, head([EMBEDDINGS, LABELS]))
        assert cos.shape == (8, 10)
        # the target cosine is the same as in the full head, wherever the class landed in the sample
        np.testing.assert_allclose(cos[np.arange(8), labels], expected[np.arange(8), LABELS], atol=1e-5)
        sampled = np.asarray(recorded[-1])
        assert set(LABELS) <= set(sampled.tolist()) and len(set(sampled.tolist())) == 10
        np.testing.assert_allclose(cos, expected[:, sampled], atol=1e-5)
        samples.append(tuple(sampled))
    assert len(set(samples)) > 1  # negatives are drawn anew each step


def test_interclass_filtering_zeroes_close_negatives():
    head = PartialFC(20, sample_rate=1.0, interclass_filtering_threshold=0.2)
    cos, _ = head([EMBEDDINGS, LABELS % 20])
    head_plain = PartialFC(20, sample_rate=1.0)
    head_plain.build([(None, 16), (None,)])
    head_plain.set_weights(head.get_weights())
    plain = np.asarray(head_plain([EMBEDDINGS, LABELS % 20])[0])
    target = np.eye(20, dtype=bool)[LABELS % 20]
    expected = np.where((plain > 0.2) & ~target, 0.0, plain)
    np.testing.assert_allclose(np.asarray(cos), expected, atol=1e-6)
    assert (expected != plain).any()


def test_batch_larger_than_the_sample_is_an_error():
    with pytest.raises(ValueError, match="fewer than the batch size 8"):
        PartialFC(50, sample_rate=0.1)([EMBEDDINGS, LABELS % 50])


def test_only_sampled_classes_move_under_l2sgd_with_momentum():
    passthrough = keras.Sequential([keras.Input((16,)), keras.layers.Identity()], name="embeddings")
    head = PartialFC(100, sample_rate=0.1, seed=3, name="partial_fc")
    model = FaceTask(passthrough, keras.layers.Identity(), head=head, margin_head=MarginHead(ArcfaceLoss(scale=16)))
    model.compile(optimizer=L2SGD(0.1, momentum=0.9, l2=5e-4))
    for step in range(3):
        batch_labels = RNG.choice(100, 8).astype("int32")
        before = np.asarray(head.kernel).copy()
        loss = model.train_on_batch(EMBEDDINGS, batch_labels, return_dict=True)["loss"]
        assert np.isfinite(loss) and loss > 0
        moved = np.flatnonzero(np.any(np.asarray(head.kernel) != before, axis=0))
        # momentum and L2 would move every class; only this step's sample may change
        assert len(moved) == head.num_sample, step
        assert set(batch_labels.tolist()) <= set(moved.tolist())


def test_dense_variables_still_get_the_plain_update():
    variable = keras.Variable(np.ones((4, 3), "float32"))
    optimizer = L2SGD(0.1, momentum=0.0, l2=0.5)
    optimizer.apply([np.zeros((4, 3), "float32")], [variable])
    np.testing.assert_allclose(np.asarray(variable), 1 - 0.1 * 0.5)  # L2 alone moves a plain variable

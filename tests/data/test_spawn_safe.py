"""The loader's first batch fetched ahead (``SpawnSafeIterator.start_prefetch``, what ``Train`` does while it builds
the model): the same batches and iterator states as reading them at once, and a ``set_state`` or ``close`` before
the first read drops it cleanly."""

import time

import numpy as np

from keras_insightface.data.insightface_rec import write_insightface_rec
from keras_insightface.data.loader import make_loader
from keras_insightface.data.sources import open_source
from tests.conftest import class_images


def _loader(tmp_path):
    if not (tmp_path / "rec" / "train.rec").exists():
        write_insightface_rec(tmp_path / "rec", class_images(4, 6), 4)
    return make_loader(open_source(tmp_path / "rec"), 4, seed=3, num_workers=1)


def _read(iterator, count):
    batches = []
    for _ in range(count):
        images, labels, *_ = next(iterator)
        batches.append((np.asarray(images), np.asarray(labels), iterator.get_state()))
    return batches


def test_a_first_batch_fetched_ahead_is_the_same_batch_and_state(tmp_path):
    reference = iter(_loader(tmp_path).dataset)
    expected = _read(reference, 3)
    middle = reference.get_state()
    reference.close()

    ahead = iter(_loader(tmp_path).dataset)
    ahead.start_prefetch()
    ahead.start_prefetch()  # idempotent
    deadline = time.monotonic() + 60
    while not ahead.early.done() and time.monotonic() < deadline:  # the worker starts with nobody reading
        time.sleep(0.05)
    assert ahead.early.done()
    got = _read(ahead, 3)
    for (images, labels, state), (want_images, want_labels, want_state) in zip(got, expected):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
        assert state == want_state
    ahead.close()

    plain = iter(_loader(tmp_path).dataset)
    plain.set_state(middle)
    want = _read(plain, 1)[0]
    plain.close()
    restored = iter(_loader(tmp_path).dataset)
    restored.start_prefetch()
    restored.set_state(middle)  # the batch fetched ahead is dropped: reading continues at the state set
    assert restored.early is None
    got = _read(restored, 1)[0]
    restored.close()
    np.testing.assert_array_equal(got[0], want[0])
    assert got[2] == want[2]

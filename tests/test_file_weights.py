"""Opening a model file runs no random initialiser (each is an XLA compilation per shape: 9.6 s of a first r50
open): the loaded weights are the file's, and only the random initialisers are skipped."""

import keras
import numpy as np
from keras.src.initializers.random_initializers import RandomInitializer

import keras_insightface as kif
from keras_insightface.saving import load_model


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _count_random_initialisers(monkeypatch):
    calls = []
    for cls in {cls for cls in _all_subclasses(RandomInitializer) if "__call__" in vars(cls)}:
        original = vars(cls)["__call__"]

        def counted(self, *args, _original=original, **kwargs):
            calls.append(type(self).__name__)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", counted)
    return calls


def test_a_loaded_model_has_the_file_weights_and_ran_no_random_initialiser(tmp_path, monkeypatch):
    calls = _count_random_initialisers(monkeypatch)
    model = kif.buildin_models("r18_tiny", emb_shape=16)
    assert calls  # building runs them (the counter works)
    path = tmp_path / "m.keras"
    model.save(path)
    calls.clear()
    loaded = load_model(path)
    assert calls == []
    for saved, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(saved), keras.ops.convert_to_numpy(restored))
    images = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict_on_batch(images), model.predict_on_batch(images), atol=1e-5)
    calls.clear()
    kif.buildin_models("r18_tiny", emb_shape=16)
    assert calls  # outside loading, initialisers run as before

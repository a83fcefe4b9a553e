"""A Keras model's two evaluation views (the image and its mirror) come from one compiled function: the same
numbers as two separate forwards of the image and of the mirror made on the host."""

import numpy as np

import keras_insightface as kif
from keras_insightface.inference.embed import embed_views
from keras_insightface.inference.embedders import CallableEmbedder, open_model


def test_the_mirror_view_in_one_graph_equals_two_forwards():
    model = kif.buildin_models("r18_tiny", emb_shape=16)
    images = np.random.default_rng(0).integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    embedder = open_model(model)
    both = embedder.views(images, flip=True)
    separate = [model.predict_on_batch(images.astype("float32")),
                model.predict_on_batch(np.ascontiguousarray(images[:, :, ::-1]).astype("float32"))]
    assert embedder._with_mirror is not None  # one model holding both forwards
    for got, want in zip(both, separate):
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(both[0], both[1])  # the mirror is another image
    # the eval loop gives the same views as any embedder of the same function (two calls, host mirror)
    plain = CallableEmbedder(lambda batch: model.predict_on_batch(np.asarray(batch, "float32")))
    for got, want in zip(embed_views(embedder, images, 4), embed_views(plain, images, 4)):
        np.testing.assert_allclose(got, want, atol=1e-5)

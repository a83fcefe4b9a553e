"""1:N search over a gallery folder of generated faces: ranking and scores against numpy, the embedding cache
(reuse, changed / removed / added images, its file), and the input errors."""

import os
import shutil

import keras
import numpy as np
import pytest

from keras_insightface.errors import DataError
from keras_insightface.inference.fingerprint import model_fingerprint
from keras_insightface.evaluation.gallery import Gallery, Match
from tests.conftest import jpeg
from tests.evaluation.test_compare import IDENTITIES, decode, pooled_model, reference_embedding, synthetic  # noqa: F401

ENROLLED = 4  # faces 0-3 of each identity form the gallery, faces 4-5 are the queries


class CountingModel:
    """The pooled model as a plain callable that counts its calls (two per batch: the faces and their mirrors)."""

    def __init__(self):
        self.model, self.calls = pooled_model(), 0

    def __call__(self, batch):
        self.calls += 1
        return self.model.predict_on_batch(batch)


@pytest.fixture
def gallery_dir(synthetic, tmp_path):
    """``gallery/person_<label>/<i>.jpg`` holding each identity's first faces."""
    for label, faces in synthetic["faces"].items():
        folder = tmp_path / "gallery" / f"person_{label}"
        folder.mkdir(parents=True)
        for face in faces[:ENROLLED]:
            shutil.copy(face, folder / face.name)
    return tmp_path / "gallery"


def test_search_ranks_identities_by_their_best_image(synthetic, gallery_dir):
    """Scores, best images, center scores and order against numpy; then top-1 / top-3 over all 16 queries.

    Bounds: top-1 >= 0.7 (chance 1/8; measured 13/16) and top-3 >= 0.85 (chance 3/8; measured 15/16) on this
    deterministic data: the pooled colour layout separates most, not all, identities.
    """
    gallery = Gallery(pooled_model(), gallery_dir)
    assert len(gallery) == IDENTITIES * ENROLLED and gallery.identities == [f"person_{k}" for k in range(8)]
    enrolled = {k: [reference_embedding(decode(face)) for face in synthetic["faces"][k][:ENROLLED]] for k in range(8)}
    query = synthetic["faces"][2][4]
    q = reference_embedding(decode(query))
    results = gallery.search(query, top_k=3)
    assert len(results) == 3 and all(isinstance(match, Match) for match in results)
    best = {k: int(np.argmax([e @ q for e in enrolled[k]])) for k in range(8)}
    expected = sorted(range(8), key=lambda k: -enrolled[k][best[k]] @ q)[:3]
    assert [match.identity for match in results] == [f"person_{k}" for k in expected]
    for match, k in zip(results, expected):
        assert match.score == pytest.approx(enrolled[k][best[k]] @ q, abs=1e-5)
        assert match.image == str(gallery_dir / f"person_{k}" / synthetic["faces"][k][best[k]].name)
        center = np.mean(enrolled[k], axis=0)
        assert match.center_score == pytest.approx(center @ q / np.linalg.norm(center), abs=1e-5)
    assert len(gallery.search(query, top_k=50)) == IDENTITIES  # top_k beyond the gallery: every identity

    top1 = top3 = 0
    for k in range(IDENTITIES):
        for face in synthetic["faces"][k][ENROLLED:]:
            found = [match.identity for match in gallery.search(decode(face), top_k=3)]
            top1 += found[0] == f"person_{k}"
            top3 += f"person_{k}" in found
    assert top1 / 16 >= 0.7 and top3 / 16 >= 0.85, (top1, top3)


def test_cache_reuse_and_invalidation(synthetic, gallery_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = CountingModel()
    first = Gallery(model, gallery_dir, model_id="pooled v1")
    count = IDENTITIES * ENROLLED
    assert (first.embedded, first.reused, first.dropped, model.calls) == (count, 0, 0, 2)  # one batch of 32
    caches = list(gallery_dir.glob(".kif_gallery_*.npz"))
    assert caches == [first.cache_path] and not list(tmp_path.glob("*.npz"))  # in the gallery, never the cwd

    model.calls = 0
    second = Gallery(model, gallery_dir, model_id="pooled v1")
    assert (second.embedded, second.reused, model.calls) == (0, count, 0)
    np.testing.assert_array_equal(second.embeddings, first.embeddings)

    changed, removed = gallery_dir / "person_0" / synthetic["faces"][0][1].name, gallery_dir / "person_3"
    changed.write_bytes(jpeg(decode(synthetic["faces"][1][5]), quality=80))  # now someone else's face
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    removed_face = removed / synthetic["faces"][3][0].name
    removed_face.unlink()
    added = gallery_dir / "newcomer.jpg"  # an image at the top level: identity "newcomer"
    shutil.copy(synthetic["faces"][5][5], added)
    third = Gallery(model, gallery_dir, model_id="pooled v1")
    assert (third.embedded, third.reused, third.dropped, model.calls) == (2, count - 2, 1, 2)
    assert "newcomer" in third.identities and len(third) == count
    for path, embedding in zip(third.images, third.embeddings):
        assert embedding == pytest.approx(reference_embedding(decode(gallery_dir / path)), abs=1e-5)
    result = third.search(synthetic["faces"][5][5], top_k=1)[0]
    assert (result.identity, result.image, result.score) == ("newcomer", str(added), pytest.approx(1.0, abs=1e-5))

    model.calls = 0
    other = Gallery(model, gallery_dir, model_id="pooled v2")  # another model: its own cache file, all embedded
    assert other.embedded == count and other.cache_path != third.cache_path and model.calls == 2
    explicit = tmp_path / "my_cache.npz"
    Gallery(model, gallery_dir, cache_path=explicit, model_id="pooled v1")
    assert explicit.is_file()
    for broken in (explicit.read_bytes()[:200], b"corrupt"):  # a truncated or foreign cache file is rebuilt
        explicit.write_bytes(broken)
        assert Gallery(model, gallery_dir, cache_path=explicit, model_id="pooled v1").embedded == count


def test_model_fingerprints_follow_the_weights(tmp_path):
    inputs = keras.Input((4,))
    dense = keras.layers.Dense(2)
    model = keras.Model(inputs, dense(inputs))
    before = model_fingerprint(model)
    assert before == model_fingerprint(model) and before.startswith("keras:")
    dense.kernel.assign(dense.kernel + 1.0)
    assert model_fingerprint(model) != before
    path = tmp_path / "m.keras"
    model.save(path)
    saved = model_fingerprint(path)
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    assert model_fingerprint(path) != saved


def test_errors(gallery_dir, tmp_path):
    model = pooled_model()
    empty = tmp_path / "empty"
    (empty / "person").mkdir(parents=True)
    (empty / "person" / "notes.txt").write_text("no faces here")
    with pytest.raises(DataError, match="empty: empty gallery"):
        Gallery(model, empty)
    with pytest.raises(DataError, match="nowhere: gallery folder does not exist"):
        Gallery(model, tmp_path / "nowhere")
    with pytest.raises(DataError, match="cannot fingerprint a function.*model_id"):
        Gallery(lambda batch: model.predict_on_batch(batch), gallery_dir)
    with pytest.raises(DataError, match="cache.npz: cannot write the gallery's embedding cache"):
        Gallery(model, gallery_dir, cache_path=tmp_path / "no" / "such" / "folder" / "cache.npz")
    gallery = Gallery(model, gallery_dir)
    face = decode(next(gallery_dir.glob("person_1/*.jpg")))
    for top_k in (0, -1, 2.5):
        with pytest.raises(DataError, match="top_k must be a positive integer"):
            gallery.search(face, top_k=top_k)
    with pytest.raises(DataError, match=r"query: image is 112x90, .*keras-insightface align"):
        gallery.search(face[:90])
    (gallery_dir / "person_1" / "small.jpg").write_bytes(jpeg(face[:90]))
    with pytest.raises(DataError, match=r"small.jpg: image is 112x90"):
        Gallery(model, gallery_dir)

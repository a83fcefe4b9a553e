"""Tests of the procedural synthetic face renderer (fast, numpy only)."""

import numpy as np
import pytest

from keras_insightface.demo.synthetic_faces import IMAGE_SIZE, render_faces, sample_identities


@pytest.fixture(scope="module")
def traits():
    return sample_identities(20, seed=0)


def test_sample_identities_deterministic_and_shaped(traits):
    again = sample_identities(20, seed=0)
    other = sample_identities(20, seed=1)
    assert set(traits) == set(again)
    for key, val in traits.items():
        assert isinstance(val, np.ndarray)
        assert val.shape[0] == 20, key
        assert np.all(np.isfinite(val)), key
        np.testing.assert_array_equal(val, again[key])
    assert any(not np.array_equal(traits[k], other[k]) for k in traits)
    assert traits["skin"].shape == (20, 3)
    assert traits["hair_color"].shape == (20, 3)
    assert traits["iris_color"].shape == (20, 3)


def test_identities_have_distinct_traits(traits):
    # every geometric / colour trait varies between identities
    geometry = ("face_w", "face_h", "jaw", "eye_sep", "eye_v", "eye_w", "eye_h")
    geometry += ("nose_v", "nose_w", "mouth_w", "mouth_v", "ear_size", "hairline")
    for key in geometry:
        assert np.std(traits[key]) > 0, key
    # no two identities share the same trait vector
    vec = np.concatenate([v.reshape(len(v), -1) for v in traits.values()], 1)
    dist = np.linalg.norm(vec[:, None] - vec[None], axis=-1)
    assert np.all(dist[~np.eye(len(vec), dtype=bool)] > 1e-3)


def test_render_shape_dtype_and_determinism(traits):
    ids = [0, 0, 1, 5, 19, 3, 3, 3, 7, 2, 11]  # more than one internal chunk
    a = render_faces(traits, ids, seed=123)
    assert a.shape == (len(ids), IMAGE_SIZE, IMAGE_SIZE, 3)
    assert a.dtype == np.uint8
    np.testing.assert_array_equal(a, render_faces(traits, np.asarray(ids), seed=123))
    b = render_faces(traits, ids, seed=124)
    assert not np.array_equal(a, b)
    assert a.std() > 10  # not blank


def test_render_edge_cases(traits):
    assert render_faces(traits, [], seed=0).shape == (0, IMAGE_SIZE, IMAGE_SIZE, 3)
    one = render_faces(traits, [4], seed=0)
    assert one.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    for d in (0.0, 0.5, 2.0):
        img = render_faces(traits, [1, 2, 3], seed=0, difficulty=d)
        assert img.shape == (3, IMAGE_SIZE, IMAGE_SIZE, 3) and img.dtype == np.uint8


def test_nuisance_variation(traits):
    # the same identity rendered with different seeds (or positions in one call) differs
    x = render_faces(traits, [3], seed=1).astype(np.float32)
    y = render_faces(traits, [3], seed=2).astype(np.float32)
    assert np.abs(x - y).mean() > 5
    same = render_faces(traits, [3] * 4, seed=1).astype(np.float32)
    assert all(np.abs(same[0] - same[i]).mean() > 5 for i in range(1, 4))


def test_difficulty_zero_is_canonical(traits):
    # without nuisances the image only depends on the identity (no random pose/lighting/noise)
    a = render_faces(traits, [3, 3], seed=1, difficulty=0.0)
    b = render_faces(traits, [3], seed=2, difficulty=0.0)
    np.testing.assert_array_equal(a[0], a[1])
    np.testing.assert_array_equal(a[0], b[0])
    # ... and different identities still look different
    c = render_faces(traits, [4], seed=1, difficulty=0.0)
    assert np.abs(a[0].astype(np.float32) - c[0]).mean() > 3

"""Verification .bin packs: safe loading, validation, writing and decoding."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from keras_insightface.data.binpack import (
    build_bin, decode_bin_images, kfold_sizes, load_bin, make_pairs, write_bin,
)
from keras_insightface.errors import DataError


def _jpegs(n, size=24):
    rng = np.random.default_rng(n)
    return [
        simplejpeg.encode_jpeg(np.ascontiguousarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
        for _ in range(n)
    ]


class Payload:
    """A class the restricted unpickler must refuse."""


def test_write_load_round_trip(tmp_path):
    images, issame = _jpegs(6), [True, False, True]
    path = tmp_path / "pack.bin"
    write_bin(path, images, issame)
    got_images, got_issame = load_bin(path)
    assert got_images == images
    assert got_issame.dtype == bool and got_issame.tolist() == issame
    assert [p.name for p in tmp_path.iterdir()] == ["pack.bin"]
    decoded = decode_bin_images(got_images, path)
    assert decoded.shape == (6, 24, 24, 3) and decoded.dtype == np.uint8


def test_numpy_array_entries(tmp_path):
    images = _jpegs(4)
    path = tmp_path / "np.bin"
    entries = [np.frombuffer(b, dtype=np.uint8).reshape(-1, 1).copy() for b in images]
    path.write_bytes(pickle.dumps((entries, [np.bool_(True), False]), protocol=2))
    got_images, got_issame = load_bin(path)
    assert got_images == images and got_issame.tolist() == [True, False]


@pytest.mark.parametrize("forbidden", [os.system, Payload()], ids=["os.system", "custom-class"])
def test_forbidden_global_refused(tmp_path, forbidden):
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([forbidden, b"x"], [True])))
    with pytest.raises(DataError, match="evil.bin: refusing to unpickle"):
        load_bin(path)


def test_structure_errors(tmp_path):
    path = tmp_path / "bad.bin"
    path.write_bytes(pickle.dumps(([b"a", b"b", b"c"], [True])))
    with pytest.raises(DataError, match="bad.bin: 3 images for 1 pairs"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", 5], [True])))
    with pytest.raises(DataError, match="bad.bin: image entry 1 is int"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", b"b"], ["yes"])))
    with pytest.raises(DataError, match="issame entry 0"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", b"b"],)))
    with pytest.raises(DataError, match="2-element"):
        load_bin(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="bad.bin: not a readable pickle"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([b"a", b"b"], [True]))[:-5])
    with pytest.raises(DataError, match="bad.bin"):
        load_bin(path)
    with pytest.raises(DataError, match="absent.bin: file not found"):
        load_bin(tmp_path / "absent.bin")
    with pytest.raises(DataError, match="2 pairs"):
        write_bin(tmp_path / "w.bin", [b"a", b"b"], [True, False])


def test_decode_corrupt_jpeg_names_index():
    images = _jpegs(3)
    images[2] = images[2][:20] + b"\x00" * 10
    with pytest.raises(DataError, match="pack.bin: image 2"):
        decode_bin_images(images, "pack.bin")


def test_real_lfw_pack(real_faces):
    REAL_PACK = real_faces / "small_lfw.bin"
    images, issame = load_bin(REAL_PACK)
    assert len(images) == 2 * len(issame) > 0
    decoded = decode_bin_images(images, REAL_PACK)
    assert decoded.shape == (len(images), 112, 112, 3) and decoded.dtype == np.uint8
    assert decoded.astype(np.float64).var() > 0


def _check_layout(pairs, issame, labels, num_pairs):
    """The folds scikit-learn's KFold(n_splits=10) (insightface's verification) cuts from the pairs each hold both
    kinds, genuine first, half and half (one more of a kind in an odd fold); the totals are equal."""
    from sklearn.model_selection import KFold

    assert pairs.shape == (2 * num_pairs, 2) and issame.shape == (2 * num_pairs,) and issame.dtype == bool
    assert issame.sum() == num_pairs
    for _, fold in KFold(n_splits=10).split(np.arange(2 * num_pairs)):
        genuine = int(issame[fold].sum())
        assert genuine in (len(fold) // 2, (len(fold) + 1) // 2) and 0 < genuine < len(fold)
        assert issame[fold].tolist() == [True] * genuine + [False] * (len(fold) - genuine)
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    assert (same == issame).all() and (pairs[:, 0] != pairs[:, 1]).all()
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == 2 * num_pairs


def test_make_pairs_random_layout_and_determinism():
    labels = np.repeat(np.arange(7), [2, 3, 5, 2, 8, 4, 2])
    pairs, issame = make_pairs(labels, 30, seed=5)
    _check_layout(pairs, issame, labels, 30)
    again, _ = make_pairs(labels, 30, seed=5)
    assert (again == pairs).all() and not (make_pairs(labels, 30, seed=6)[0] == pairs).all()
    total_genuine = sum(n * (n - 1) // 2 for n in [2, 3, 5, 2, 8, 4, 2])
    every, issame = make_pairs(labels, total_genuine // 10 * 10, seed=0)
    _check_layout(every, issame, labels, total_genuine // 10 * 10)


@pytest.mark.parametrize("num_pairs", [10, 11, 13, 15, 24, 37])
def test_any_number_of_pairs_in_kfold_folds(num_pairs):
    labels = np.repeat(np.arange(8), 6)
    pairs, issame = make_pairs(labels, num_pairs, seed=num_pairs)
    _check_layout(pairs, issame, labels, num_pairs)


def test_kfold_sizes_are_sklearn_kfold():
    from sklearn.model_selection import KFold

    for count in (20, 22, 26, 29, 30, 6000, 6002):
        expected = [len(test) for _, test in KFold(n_splits=10).split(np.arange(count))]
        assert kfold_sizes(count).tolist() == expected


def test_multiples_of_ten_keep_insightface_layout():
    """A multiple of 10 pairs gives insightface's own layout (lfw.bin: 10 folds of 300 genuine then 300 impostor)."""
    _, issame = make_pairs(np.repeat(np.arange(6), 5), 30, seed=4)
    assert issame.tolist() == ([True] * 3 + [False] * 3) * 10


def _brute_force(labels, embeddings, count):
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    sims = unit @ unit.T
    i, j = np.triu_indices(len(labels), 1)
    genuine = labels[i] == labels[j]
    least = np.argsort(sims[i, j][genuine])[:count]
    most = np.argsort(-sims[i, j][~genuine])[:count]
    as_set = lambda a, b: {tuple(p) for p in np.stack([a, b], 1).tolist()}  # noqa: E731
    return as_set(i[genuine][least], j[genuine][least]), as_set(i[~genuine][most], j[~genuine][most])


def test_make_pairs_hardest_on_hand_made_embeddings():
    labels = np.repeat(np.arange(4), 4)
    angles = [0, 0.01, 0.02, np.pi, 1.0, 1.01, 1.02, 1.03, 1.0, 2.0, 2.01, 2.02, 4.0, 4.01, 4.02, 4.03]
    embeddings = 3 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    pairs, issame = make_pairs(labels, 10, embeddings=embeddings, hardest=True)
    _check_layout(pairs, issame, labels, 10)
    genuine = {tuple(sorted(p)) for p in pairs[issame].tolist()}
    assert {(0, 3), (1, 3), (2, 3), (8, 9), (8, 10), (8, 11)} <= genuine  # outlier 3, and 8 far from its class
    impostors = {tuple(sorted(p)) for p in pairs[~issame].tolist()}
    assert {(4, 8), (5, 8), (6, 8), (7, 8)} <= impostors and (0, 12) not in impostors
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 5)
    embeddings = rng.normal(size=(30, 8))
    pairs, issame = make_pairs(labels, 40, embeddings=embeddings, hardest=True)
    _check_layout(pairs, issame, labels, 40)
    genuine, impostor = _brute_force(labels, embeddings, 40)
    assert {tuple(sorted(p)) for p in pairs[issame].tolist()} == genuine
    assert {tuple(sorted(p)) for p in pairs[~issame].tolist()} == impostor


def test_make_pairs_errors():
    with pytest.raises(DataError, match="make_pairs: 1 identities have 2 or more images"):
        make_pairs([0, 0, 1, 2, 3], 10)
    with pytest.raises(DataError, match="only 2 distinct genuine pairs, 10 needed"):
        make_pairs([0, 0, 1, 1, 2, 3], 10)
    with pytest.raises(DataError, match="num_pairs must be at least 10, got 9: each of the 10 folds needs a genuine"):
        make_pairs(np.repeat(np.arange(5), 5), 9)
    with pytest.raises(DataError, match="hardest=True needs embeddings"):
        make_pairs(np.repeat(np.arange(5), 5), 10, hardest=True)
    with pytest.raises(DataError, match=r"embeddings have shape \(3, 2\)"):
        make_pairs(np.repeat(np.arange(5), 5), 10, embeddings=np.ones((3, 2)), hardest=True)


class _Source:
    def __init__(self, images, labels):
        self.images, self.labels, self.name = images, np.asarray(labels), "mem"

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def test_build_bin_writes_a_loadable_pack(tmp_path):
    labels = np.repeat(np.arange(5), 4)
    source = _Source(_jpegs(20, size=16), labels)
    pairs, issame = build_bin(source, tmp_path / "made.bin", 20, seed=2)
    images, loaded = load_bin(tmp_path / "made.bin")
    assert loaded.tolist() == issame.tolist()
    assert images == [source.images[i] for i in pairs.ravel().tolist()]
    assert decode_bin_images(images).shape == (80, 16, 16, 3)
    source.images[int(pairs[0, 0])] = b"\x89PNG not a jpeg"
    with pytest.raises(DataError, match=f"mem: image {int(pairs[0, 0])}: not a JPEG"):
        build_bin(source, tmp_path / "bad.bin", 20, seed=2)

"""The generated default dataset: real formats, disjoint verification identities, balanced pairs, determinism."""

import numpy as np

from keras_insightface.data.binpack import decode_bin_images, load_bin
from keras_insightface.data.insightface_rec import InsightfaceRec
from keras_insightface.demo.synthetic import generate_dataset, verification_pairs

SMALL = dict(num_identities=6, images_per_identity=3, num_val_identities=4, val_images_per_identity=3, num_pairs=20)


def test_generated_dataset_is_insightface_layout(tmp_path):
    paths = generate_dataset(tmp_path / "a", seed=3, **SMALL)
    rec = InsightfaceRec(paths["train"])
    assert rec.has_header and len(rec) == 18 and rec.num_classes == 6
    assert np.bincount(rec.labels).tolist() == [3] * 6
    images, issame = load_bin(paths["val"])
    assert len(images) == 40 and issame.sum() == 10 and (~issame).sum() == 10
    decoded = decode_bin_images(images, paths["val"])
    assert decoded.shape == (40, 112, 112, 3)


def test_generation_is_deterministic_and_cached(tmp_path):
    first = generate_dataset(tmp_path / "a", seed=3, **SMALL)
    second = generate_dataset(tmp_path / "b", seed=3, **SMALL)
    for name in ("train.rec", "train.idx", "property", "synthetic_val.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    stamp = (tmp_path / "a" / "train.rec").stat().st_mtime_ns
    generate_dataset(tmp_path / "a", seed=3, **SMALL)
    assert (tmp_path / "a" / "train.rec").stat().st_mtime_ns == stamp  # same config: not rewritten
    generate_dataset(tmp_path / "a", seed=4, **SMALL)
    assert (tmp_path / "a" / "train.rec").read_bytes() != (tmp_path / "b" / "train.rec").read_bytes()
    assert first["val"].endswith("synthetic_val.bin") and second["train"] == str(tmp_path / "b")


def test_verification_pairs_are_balanced_and_correct():
    identity = np.repeat(np.arange(10, 15), 4)
    pairs = verification_pairs(identity, 50, np.random.default_rng(0))
    assert len(pairs) == 100 and sum(same for *_, same in pairs) == 50
    for a, b, same in pairs:
        assert a != b and (identity[a] == identity[b]) == same

"""Verification metrics against hand-computed values, flip-summed embedding of a pack, and the eval command."""

import keras
import numpy as np
import pytest

from keras_insightface.cli import main
from keras_insightface.data.binpack import decode_bin_images, load_bin, write_bin
from keras_insightface.evaluation.verification import (
    best_threshold_accuracy,
    evaluate_bin,
    evaluate_embeddings,
    kfold_accuracy,
    mean_norm,
    VerificationSet,
    pair_scores,
    val_at_far,
)
from keras_insightface.errors import DataError
from keras_insightface.inference.embed import embed_images
from tests.conftest import jpeg


def test_seed_metric_by_hand():
    genuine = [0.9, 0.8, 0.65, 0.62, 0.58, 0.3]
    impostor = [0.05 + 0.02 * i for i in range(18)] + [0.6, 0.7]  # 20 impostors: candidates 0.6 and 0.7
    scores = np.array(genuine + impostor)
    issame = np.array([True] * len(genuine) + [False] * len(impostor))
    order = np.random.default_rng(1).permutation(len(scores))
    accuracy, threshold = best_threshold_accuracy(scores[order], issame[order])
    # at 0.6: genuine above = 4 (0.9, 0.8, 0.65, 0.62), impostors at or below = 19 -> 23 / 26
    # at 0.7: genuine above = 2, impostors at or below = 20 -> 22 / 26
    assert threshold == pytest.approx(0.6)
    assert accuracy == pytest.approx(23 / 26)


def _unit_pairs(squared_distances):
    angles = np.arccos(1 - np.asarray(squared_distances) / 2)
    first = np.stack([np.ones_like(angles), np.zeros_like(angles)], axis=1)
    second = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return first, second


def test_insightface_kfold_by_hand():
    # 20 pairs -> 10 folds of 2; pairs alternate genuine (d=0.105) and impostor (d=2.0),
    # except genuine pair 6 (fold 3) which is far apart (d=3.0).
    issame = np.array([True, False] * 10)
    distances = np.where(issame, 0.105, 2.0)
    distances[6] = 3.0
    first, second = _unit_pairs(distances)
    mean, std = kfold_accuracy(first * 3.0, second, issame)  # scale must not matter: vectors are normalised
    # every fold's threshold (chosen on the other nine) is 0.11; fold 3 gets 1 of 2 right, the rest 2 of 2
    assert mean == pytest.approx(0.95)
    assert std == pytest.approx(0.15)


def test_kfold_needs_enough_pairs_and_seed_metric_needs_both_kinds():
    with pytest.raises(ValueError, match="at least 10 pairs"):
        kfold_accuracy(np.ones((3, 2)), np.ones((3, 2)), [True, False, True])
    with pytest.raises(ValueError, match="genuine and impostor"):
        best_threshold_accuracy([0.1, 0.2], [True, True])


def _linear_model(weights):
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Flatten()(inputs)
    dense = keras.layers.Dense(weights.shape[1], use_bias=False)
    model = keras.Model(inputs, dense(x))
    dense.set_weights([weights])
    return model


def test_embed_images_flip_sum_and_padding():
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(48, 3)).astype("float32")
    images = rng.integers(0, 256, (5, 4, 4, 3)).astype("uint8")
    model = _linear_model(weights)
    flat = images.astype("float32").reshape(5, -1)
    flipped = images[:, :, ::-1].astype("float32").reshape(5, -1)
    np.testing.assert_allclose(embed_images(model, images, batch_size=4, flip=False), flat @ weights, rtol=1e-4)
    np.testing.assert_allclose(
        embed_images(model, images, batch_size=4, flip=True), flat @ weights + flipped @ weights, rtol=1e-4
    )


def test_pair_scores_are_cosines():
    emb = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(pair_scores(emb), [1.0, np.sqrt(0.5)])


def _toy_pack(path, seed=3):
    """12 pairs of 4x4 images: genuine pairs are two noisy copies of a base, impostor pairs two bases."""
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 256, (12, 4, 4, 3))
    images, issame = [], []
    for i in range(12):
        same = i % 2 == 0
        a, b = bases[i], bases[i] if same else bases[(i + 5) % 12]
        images += [jpeg(np.clip(a + rng.normal(0, 3, a.shape), 0, 255)), jpeg(np.clip(b + rng.normal(0, 3, b.shape), 0, 255))]
        issame.append(same)
    write_bin(path, images, issame)
    return path


def test_evaluate_bin_on_a_written_pack(tmp_path):
    _toy_pack(tmp_path / "toy.bin")
    weights = np.random.default_rng(4).normal(size=(48, 16)).astype("float32")
    result = evaluate_bin(_linear_model(weights), tmp_path / "toy.bin", batch_size=8)
    assert set(result) == {"accuracy", "threshold", "kfold_mean", "kfold_std", "val", "val_std", "far", "xnorm"}
    assert result["accuracy"] == 1.0  # random projections keep near-identical images close
    images = VerificationSet(tmp_path / "toy.bin").images.astype("float32")
    views = [images.reshape(24, -1) @ weights, images[:, :, ::-1].reshape(24, -1) @ weights]
    expected = np.mean(np.linalg.norm(np.concatenate(views), axis=1))  # insightface: each view's norm, not the sum's
    assert result["xnorm"] == pytest.approx(expected, rel=1e-4)


def test_xnorm_is_the_mean_norm():
    emb = np.random.default_rng(5).normal(size=(40, 8)) * np.arange(1, 41)[:, None]
    issame = np.array([True, False] * 10)
    assert evaluate_embeddings(emb, issame)["xnorm"] == pytest.approx(np.linalg.norm(emb, axis=1).mean())
    assert mean_norm(emb[:10], emb[10:]) == pytest.approx(np.linalg.norm(emb, axis=1).mean())


def test_val_at_far_by_hand():
    # 10 folds of 20 pairs (10 genuine, 10 impostor). Fold k: one hard impostor at 1.0005 + 0.1k (the others at
    # 3.5); its first k genuine pairs at 1.05, the rest at 0.5. Training FAR first leaves 0 at the smallest training
    # impostor d (1/90 per impostor), so the FAR=1e-3 threshold is floor(d, 0.001) + 0.001 * 1e-3 / (1/90):
    # 1.10009 for fold 0 (its own hard impostor 1.0005 is accepted: FAR 1/10, VAL 1), 1.00009 for the others
    # (genuine at 1.05 rejected: VAL (10 - k) / 10, FAR 0).
    issame, distances = [], []
    for k in range(10):
        issame += [True] * 10 + [False] * 10
        distances += [1.05] * k + [0.5] * (10 - k) + [1.0005 + 0.1 * k] + [3.5] * 9
    first, second = _unit_pairs(np.array(distances))
    val, val_std, far = val_at_far(first, second * 2.0, np.array(issame))
    vals = [1.0] + [(10 - k) / 10 for k in range(1, 10)]
    assert val == pytest.approx(np.mean(vals)) and val == pytest.approx(0.55)
    assert val_std == pytest.approx(np.std(vals))
    assert far == pytest.approx(0.01)


def test_val_at_far_unreachable_target_gives_threshold_zero():
    first, second = _unit_pairs(np.where(np.arange(20) % 2 == 0, 0.1, 2.0))
    # every impostor pair is at 2.0 and the grid stops below 1.5: the target FAR is never reached
    assert val_at_far(first, second, np.arange(20) % 2 == 0, thresholds=np.arange(0, 1.5, 0.01)) == (0.0, 0.0, 0.0)


def _onnx_embedder(path, weights, channels_first):
    """An ONNX graph ``x -> flatten(NCHW x) @ weights``, with an NCHW or an NHWC input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, x = [], "x"
    if not channels_first:
        nodes.append(helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]))
        x = "xt"
    nodes += [helper.make_node("Flatten", [x], ["flat"], axis=1), helper.make_node("MatMul", ["flat", "w"], ["y"])]
    shape = ["N", 3, 4, 4] if channels_first else ["N", 4, 4, 3]
    graph = helper.make_graph(
        nodes, "emb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", weights.shape[1]])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.parametrize("channels_first", [True, False])
def test_eval_command_on_an_onnx_model(tmp_path, capsys, channels_first):
    pytest.importorskip("onnxruntime")
    pack = _toy_pack(tmp_path / "toy.bin")
    weights = np.random.default_rng(6).normal(size=(48, 16)).astype("float32")
    _onnx_embedder(tmp_path / "m.onnx", weights, channels_first)
    assert main(["eval", "-m", str(tmp_path / "m.onnx"), "-t", str(pack), "-b", "0"]) == 2
    assert "batch_size must be positive, received 0" in capsys.readouterr().err
    assert main(["eval", "-m", str(tmp_path / "m.onnx"), "-t", str(pack), "-b", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| set | accuracy | threshold | 10-fold | VAL@FAR=1e-3 | FAR | XNorm |"
    encoded, issame = load_bin(pack)
    images = decode_bin_images(encoded, str(pack)).astype(np.float64)
    # insightface's ONNX convention: (x - 127.5) / 127.5, NCHW
    views = [((v - 127.5) / 127.5).transpose(0, 3, 1, 2).reshape(24, -1) @ weights for v in (images, images[:, :, ::-1])]
    expected = evaluate_embeddings(views[0] + views[1], issame, xnorm=mean_norm(*views))
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[0] == "toy"
    numbers = [float(v) for c in cells[1:-1] for v in c.split("±")]
    keys = ["accuracy", "threshold", "kfold_mean", "kfold_std", "val", "val_std", "far"]
    np.testing.assert_allclose(numbers, [expected[k] for k in keys], atol=2e-4)
    assert float(cells[-1]) == pytest.approx(expected["xnorm"], rel=1e-4)


def test_too_small_or_one_sided_pack_is_rejected_up_front(tmp_path):
    images = [jpeg(np.zeros((8, 8, 3)))] * 24
    write_bin(tmp_path / "few.bin", images[:8], [True, False] * 2)
    with pytest.raises(DataError, match="few.bin: 4 pairs .2 genuine.; verification needs at least 10 pairs"):
        VerificationSet(tmp_path / "few.bin")
    write_bin(tmp_path / "same.bin", images, [True] * 12)
    with pytest.raises(DataError, match="same.bin: 12 pairs .12 genuine."):
        VerificationSet(tmp_path / "same.bin")


def test_seed_metric_with_fewer_than_ten_impostors_searches_all_of_them():
    # int(0.1 x 6) = 0 impostor candidates: the seed's ff[-0:] is every impostor score
    scores = np.array([0.9, 0.5, 0.45, 0.4, 0.6, 0.3, 0.2, 0.1, 0.05, 0.0])
    issame = np.array([True] * 4 + [False] * 6)
    # candidate 0.6 (the only one of a top-10% rule): 1 genuine above + 6 impostors at or below = 7;
    # candidate 0.3: 4 + 5 = 9, the best
    assert best_threshold_accuracy(scores, issame) == (0.9, 0.3)


def _sign_model(size, dims, seed):
    """``flatten(x) @ W`` with ``W`` in {-1, 0, 1}: integer embeddings of uint8 pixels, exact in float32, so the
    references below see the very numbers the model gives."""
    weights = np.random.default_rng(seed).choice([-1, 0, 0, 0, 1], size=(size * size * 3, dims)).astype("float32")
    return _linear_model_of(size, weights), weights


def _linear_model_of(size, weights):
    inputs = keras.Input((size, size, 3))
    dense = keras.layers.Dense(weights.shape[1], use_bias=False)
    model = keras.Model(inputs, dense(keras.layers.Flatten()(inputs)))
    dense.set_weights([weights])
    return model


def _insightface_reference(views, issame):
    """``(XNorm, 10-fold mean, std)`` as arcface_torch ``eval/verification.py``: float64 views, summed,
    ``sklearn.preprocessing.normalize``, squared L2 distance, ``KFold(10)`` without shuffle, thresholds
    ``np.arange(0, 4, 0.01)``, each fold's best threshold (first of equal accuracy) chosen on the other folds."""
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import normalize

    views = [np.asarray(v, np.float64) for v in views]
    norms = [np.linalg.norm(row) for view in views for row in view]
    xnorm = sum(norms) / len(norms)
    embeddings = normalize(views[0] + views[1])
    dist = np.sum(np.square(embeddings[0::2] - embeddings[1::2]), axis=1)
    thresholds = np.arange(0, 4, 0.01)

    def accuracy(threshold, rows):
        return float(np.sum((dist[rows] < threshold) == issame[rows])) / len(rows)

    folds = []
    for train, test in KFold(n_splits=10, shuffle=False).split(np.arange(len(issame))):
        best = int(np.argmax([accuracy(t, train) for t in thresholds]))
        folds.append(accuracy(thresholds[best], test))
    return xnorm, np.mean(folds), np.std(folds)


def _seed_reference(views, issame):
    """``(accuracy, threshold)`` as the seed's ``evals.py``: float32 flip sum, ``sklearn`` normalize, cosine,
    candidates the top ``int(0.1 x impostors)`` impostor scores (all when 0), first best kept."""
    from sklearn.preprocessing import normalize

    embeddings = normalize(np.asarray(views[0], np.float32) + np.asarray(views[1], np.float32))
    cosine = (embeddings[0::2] * embeddings[1::2]).sum(1)
    genuine, impostor = np.sort(cosine[issame]), np.sort(cosine[~issame])
    steps = int(0.1 * len(impostor))
    candidates = impostor[len(impostor) - steps :] if steps else impostor
    counts = [(genuine > c).sum() + (impostor <= c).sum() for c in candidates]
    best = int(np.argmax(counts))
    return counts[best] / len(cosine), candidates[best]


def _printed_against_references(capsys, pack, size, seed):
    model, weights = _sign_model(size, 16, seed)
    path = str(pack.parent / f"sign{seed}.keras")
    model.save(path)
    assert main(["eval", "-m", path, "-t", str(pack), "-b", "16"]) == 0
    out = capsys.readouterr().out.splitlines()
    encoded, issame = load_bin(pack)
    images = decode_bin_images(encoded, str(pack)).astype(np.int64)
    views = [images.reshape(len(images), -1) @ weights.astype(np.int64),
             images[:, :, ::-1].reshape(len(images), -1) @ weights.astype(np.int64)]
    name = pack.stem
    xnorm, mean, std = _insightface_reference(views, issame)
    accuracy, threshold = _seed_reference(views, issame)
    insightface = ["insightface (arcface_torch eval/verification.py: 10-fold accuracy on squared L2 distance):",
                   "[%s]XNorm: %f" % (name, xnorm), "[%s]Accuracy-Flip: %1.5f+-%1.5f" % (name, mean, std)]
    seed_lines = ["seed (evals.py eval_callback: best accuracy over the top 10% impostor cosine thresholds):",
                  ">>>> %s evaluation max accuracy: %f, thresh: %f, previous max accuracy: %f"
                  % (name, accuracy, threshold, 0.0)]
    assert out[-5:] == insightface + seed_lines
    row = [c.strip() for c in out[2].strip("|").split("|")]
    assert row[:4] == [name, f"{accuracy:.4f}", f"{threshold:.4f}", f"{mean:.4f} ± {std:.4f}"]
    result = evaluate_bin(model, pack, batch_size=16)  # unrounded: the float32 threshold bit for bit
    assert (result["accuracy"], result["threshold"]) == (accuracy, float(threshold))
    assert (result["kfold_mean"], result["kfold_std"]) == (mean, std)
    return mean, accuracy


def test_eval_prints_insightface_and_seed_lines_on_the_real_pack(real_faces, tmp_path, capsys):
    pack = tmp_path / "small_lfw_pairs.bin"
    pack.write_bytes((real_faces / "small_lfw_pairs.bin").read_bytes())
    _printed_against_references(capsys, pack, 112, seed=0)


def _hard_pack(path, pairs=300, size=8, seed=5):
    """``pairs`` pairs of ``size`` x ``size`` images near one shared pattern: genuine pairs are two noisy copies
    of a base, impostor pairs two bases; noisy enough that both metrics fall well below 1."""
    rng = np.random.default_rng(seed)
    common = rng.integers(60, 200, (size, size, 3))
    bases = np.clip(common + rng.normal(0, 40, (pairs, size, size, 3)), 0, 255)
    images, issame = [], []
    for i in range(pairs):
        same = i % 3 != 0
        a, b = bases[i], bases[i] if same else bases[(i + 7) % pairs]
        images += [jpeg(np.clip(view + rng.normal(0, 25, view.shape), 0, 255)) for view in (a, b)]
        issame.append(same)
    write_bin(path, images, issame)
    return path


def test_eval_prints_insightface_and_seed_lines_on_generated_packs(tmp_path, capsys):
    mean, accuracy = _printed_against_references(capsys, _hard_pack(tmp_path / "hard.bin"), 8, seed=1)
    assert 0.6 < mean < 0.97 and 0.6 < accuracy < 0.97, (mean, accuracy)  # thresholds matter: not separable
    _printed_against_references(capsys, _toy_pack(tmp_path / "toy.bin"), 4, seed=2)  # 6 impostors: all candidates

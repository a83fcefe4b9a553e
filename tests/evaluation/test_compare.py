"""1:1 comparison on generated faces: the similarity against a numpy computation, same > different identity,
thresholds from a number, a .bin pack and a history JSON, and the input errors.

The embedder is a fixed Keras model whose behaviour is known: the normalised image averaged over 16x16 blocks
(a 7x7x3 colour layout) standardised per image. On synthetic faces drawn with mild nuisances (difficulty 0.3)
this layout is identity-specific (skin, hair and clothing colours, face shape), so same-identity pairs score
higher, while an untrained CNN would give no such guarantee.
"""

import json

import keras
import numpy as np
import pytest
import simplejpeg

from keras_insightface.data.convert import rec_to_folders
from keras_insightface.demo.synthetic import generate_dataset
from keras_insightface.errors import DataError
from keras_insightface.evaluation.compare import compare, resolve_threshold
from keras_insightface.inference.fingerprint import model_fingerprint
from keras_insightface.evaluation.verification import evaluate_bin
from tests.conftest import jpeg

IDENTITIES, PER_IDENTITY = 8, 6


def pooled_model(pool=16):
    """``standardise(avgpool_pool((x - 127.5) / 128))``, flattened: a weightless, deterministic embedder."""
    inputs = keras.Input((112, 112, 3), name="image")
    x = keras.layers.Rescaling(1 / 128, offset=-127.5 / 128, name="normalize")(inputs)
    x = keras.layers.Flatten()(keras.layers.AveragePooling2D(pool)(x))
    x = keras.layers.LayerNormalization(center=False, scale=False, name="embedding")(x)
    return keras.Model(inputs, x, name="pooled")


def reference_embedding(image, pool=16):
    """numpy version of ``pooled_model`` + flip-sum + L2 normalisation (the eps of LayerNorm only scales)."""
    def standardised(x):
        x = x.reshape(112 // pool, pool, 112 // pool, pool, 3).mean(axis=(1, 3)).ravel()
        return (x - x.mean()) / x.std()

    x = np.asarray(image, "float64")
    summed = standardised(x) + standardised(x[:, ::-1])
    return summed / np.linalg.norm(summed)


def decode(path):
    return simplejpeg.decode_jpeg(path.read_bytes(), colorspace="RGB")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The generated dataset (8 identities x 6 faces, mild nuisances) and its faces as ``faces/<label>/<i>.jpg``."""
    root = tmp_path_factory.mktemp("synthetic")
    paths = generate_dataset(
        root / "data", num_identities=IDENTITIES, images_per_identity=PER_IDENTITY, num_val_identities=10,
        val_images_per_identity=3, num_pairs=40, difficulty=0.3,
    )
    rec_to_folders(paths["train"], root / "faces")
    faces = {
        label: sorted((root / "faces" / str(label)).glob("*.jpg"), key=lambda p: int(p.stem))
        for label in range(IDENTITIES)
    }
    return {"val": paths["val"], "faces": faces, "root": root}


@pytest.fixture(scope="module")
def model():
    return pooled_model()


def test_similarity_is_the_flip_summed_cosine(synthetic, model):
    a, b = synthetic["faces"][0][0], synthetic["faces"][3][1]
    result = compare(model, a, b)
    expected = float(reference_embedding(decode(a)) @ reference_embedding(decode(b)))
    assert result["similarity"] == pytest.approx(expected, abs=1e-5)
    assert (result["same"], result["threshold"], result["threshold_source"]) == (None, None, None)
    from_arrays = compare(model, decode(a), decode(b))["similarity"]
    assert from_arrays == pytest.approx(result["similarity"], abs=1e-6)
    assert compare(model, a, a)["similarity"] == pytest.approx(1.0, abs=1e-5)


def test_same_identity_scores_higher_than_other_identities(synthetic, model):
    """Each identity's first face against two of its other faces and against every other identity's first face.

    Bounds: every query's mean genuine score beats its mean impostor score (the pooled colour layout is
    identity-specific at difficulty 0.3), and at least 85% of (genuine, impostor) score pairs are ordered right
    (chance is 50%; measured 0.97 on this deterministic data).
    """
    faces, ordered, total = synthetic["faces"], 0, 0
    for label in range(IDENTITIES):
        query = faces[label][0]
        genuine = [compare(model, query, other)["similarity"] for other in faces[label][1:3]]
        impostor = [compare(model, query, faces[k][0])["similarity"] for k in range(IDENTITIES) if k != label]
        assert np.mean(genuine) > np.mean(impostor), (label, genuine, impostor)
        ordered += sum(g > i for g in genuine for i in impostor)
        total += len(genuine) * len(impostor)
    assert ordered / total >= 0.85


def test_threshold_from_a_number(synthetic, model):
    assert resolve_threshold("0.3") == (0.3, "given number 0.3")
    assert resolve_threshold(-0.25) == (-0.25, "given number -0.25")
    a, b = synthetic["faces"][1][0], synthetic["faces"][1][1]
    similarity = compare(model, a, b)["similarity"]
    below, at = compare(model, a, b, threshold=similarity - 0.01), compare(model, a, b, threshold=similarity)
    assert below["same"] is True and below["threshold"] == pytest.approx(similarity - 0.01)
    assert at["same"] is False  # same means strictly above, as evaluate_bin's threshold
    for bad, message in [("1.4", r"in \[-1, 1\]"), ("nan", r"in \[-1, 1\]"), ("lfw", "expected a number, a .bin")]:
        with pytest.raises(DataError, match=message):
            resolve_threshold(bad)


def test_threshold_from_a_bin_pack(synthetic, model):
    expected = evaluate_bin(model, synthetic["val"])
    value, source = resolve_threshold(synthetic["val"], model)
    assert value == expected["threshold"]
    assert synthetic["val"] in source and f"accuracy {expected['accuracy']:.4f}" in source and "40 pairs" in source
    a, b = synthetic["faces"][2][0], synthetic["faces"][2][1]
    result = compare(model, a, b, threshold=synthetic["val"])
    assert (result["threshold"], result["threshold_source"]) == (value, source)
    assert result["same"] == (result["similarity"] > value)
    with pytest.raises(DataError, match="needs the model"):
        resolve_threshold(synthetic["val"])
    with pytest.raises(DataError, match="missing.bin: verification pack does not exist"):
        resolve_threshold(synthetic["root"] / "missing.bin", model)


def test_threshold_from_a_history_json(tmp_path):
    history = {
        "lr": [0.1, 0.1, 0.01, 0.01], "loss": [9.0, 7.0, 5.0, 4.0], "accuracy": [0.1, 0.3, 0.5, 0.6],
        "lfw": [0.90, 0.97, 0.95, 0.97], "lfw_thresh": [0.10, 0.25, 0.20, 0.30],
        "lfw_kfold": [0.9, 0.96, 0.95, 0.96], "lfw_kfold_std": [0.01] * 4,
        "cfp_fp": [0.80, 0.85], "cfp_fp_thresh": [0.15, 0.18],  # evaluated every second epoch
    }
    path = tmp_path / "r50_hist.json"
    path.write_text(json.dumps(history))
    # lfw (the first set): best 0.97 first reached at epoch 2
    assert resolve_threshold(path) == (0.25, f"{path}: lfw threshold of epoch 2 (best lfw accuracy 0.9700)")
    assert resolve_threshold(str(path), set_name="cfp_fp") == (
        0.18, f"{path}: cfp_fp threshold of epoch 4 (best cfp_fp accuracy 0.8500)"
    )
    with pytest.raises(DataError, match="no verification set 'agedb_30'.*it has lfw, cfp_fp"):
        resolve_threshold(path, set_name="agedb_30")
    bare = tmp_path / "bare_hist.json"
    bare.write_text(json.dumps({"lr": [0.1], "loss": [3.0], "accuracy": [0.2]}))
    with pytest.raises(DataError, match="bare_hist.json: no verification results.*_thresh"):
        resolve_threshold(bare)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not a readable history JSON"):
        resolve_threshold(broken)
    with pytest.raises(DataError, match="nothing.json: history file does not exist"):
        resolve_threshold(tmp_path / "nothing.json")


def test_wrong_size_unreadable_images_and_prepare(synthetic, model, tmp_path):
    face = decode(synthetic["faces"][0][0])
    big = tmp_path / "big.jpg"
    big.write_bytes(jpeg(np.pad(face, ((4, 4), (10, 10), (0, 0)))))  # 132 wide, 120 high
    with pytest.raises(DataError, match=r"big.jpg: image is 132x120, .*aligned 112x112 .*keras-insightface align"):
        compare(model, big, face)
    with pytest.raises(DataError, match=r"image_b: image is 112x100"):
        compare(model, face, face[:100])

    def crop(image):  # a stand-in for a detector: cuts the padding off, leaves aligned crops alone
        return image[4:116, 10:122] if image.shape[:2] == (120, 132) else image

    prepared = compare(model, big, synthetic["faces"][5][0], prepare=crop)["similarity"]
    direct = compare(model, crop(decode(big)), decode(synthetic["faces"][5][0]))["similarity"]
    assert prepared == pytest.approx(direct, abs=1e-6)
    with pytest.raises(DataError, match=r"prepare returned a uint8 \(100, 112, 3\)"):
        compare(model, face, face, prepare=lambda image: image[:100])

    def no_face(image):
        raise DataError("no face found")

    with pytest.raises(DataError, match="big.jpg: no face found"):  # the detector's error names the file
        compare(model, big, face, prepare=no_face)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(DataError, match=r"notes.jpg: cannot decode image \(not a JPEG, PNG or BMP image\)"):
        compare(model, text, face)
    with pytest.raises(DataError, match="gone.jpg: image does not exist"):
        compare(model, tmp_path / "gone.jpg", face)
    with pytest.raises(DataError, match=r"image_a: expected a file path or a uint8 \(H, W, 3\)"):
        compare(model, face.astype("float32"), face)


def test_model_file_and_callable_give_the_same_similarity(synthetic, model, tmp_path):
    a, b = synthetic["faces"][4][0], synthetic["faces"][6][2]
    expected = compare(model, a, b)["similarity"]
    path = tmp_path / "pooled.keras"
    model.save(path)
    assert compare(path, a, b)["similarity"] == pytest.approx(expected, abs=1e-6)
    assert compare(lambda batch: model.predict_on_batch(batch), a, b)["similarity"] == pytest.approx(expected, abs=1e-6)
    fingerprint = model_fingerprint(path)
    assert fingerprint.startswith(f"file:{path}|{path.stat().st_size}|")
    assert model_fingerprint(lambda batch: batch) is None

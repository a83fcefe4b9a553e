"""IJB-B/C evaluation: ROC metrics with known answers, template pooling, pair scores, 1:N, readers, CLI end to end."""

import shutil

import numpy as np
import pytest

from keras_insightface.cli import main
from keras_insightface.evaluation import ijb, ijb_meta
from keras_insightface.errors import DataError
from keras_insightface.demo.ijb_fixture import make_ijb_fixture
from keras_insightface.inference.embed import embed_files


@pytest.fixture(scope="module")
def ijb_root(tmp_path_factory):
    """6 identities x (1 gallery + 2 probe templates) x 2 medias x 2 images, written once for the module."""
    root = tmp_path_factory.mktemp("ijb")
    make_ijb_fixture(root, "IJBC", identities=6, probe_templates=2, media=2, images=2, seed=0)
    return root


def _projection_embedder(dim=32, seed=0):
    """A fixed random projection of the 8x8-pooled aligned pixels: a model-free embedding."""
    weights = np.random.default_rng(seed).normal(size=(14 * 14 * 3, dim)).astype(np.float32)

    def embed(images):
        x = np.asarray(images, np.float32) / 127.5 - 1
        return x.reshape(len(x), 14, 8, 14, 8, 3).mean(axis=(2, 4)).reshape(len(x), -1) @ weights

    return embed


def test_tar_at_far_known_answer():
    impostor = np.linspace(0.0, 1.0, 10_000)
    genuine = np.r_[np.linspace(2.0, 3.0, 95), 0.9995, 0.995, 0.95, 0.5, -1.0]  # 5 below some impostors
    scores, labels = np.r_[genuine, impostor], np.r_[np.ones(100), np.zeros(10_000)].astype(bool)
    expected = [0.95, 0.95, 0.95, 0.96, 0.97, 0.98]  # FAR 1e-6 .. 1e-1 accept 0, 0, 1, 10, 100, 1000 impostors
    assert ijb.tar_at_far(scores, labels).tolist() == pytest.approx(expected)
    assert ijb.Roc(scores, labels).tar_at_far(rule="at_most").tolist() == pytest.approx(expected)


def test_tar_rules_and_ties():
    impostor = np.r_[0.9, 0.9, np.full(8, 0.1)]  # accepting exactly 1 impostor is impossible (a tie)
    scores, labels = np.r_[0.95, 0.5, impostor], np.r_[True, True, np.zeros(10, bool)]
    roc = ijb.Roc(scores, labels)
    assert roc.tar_at_far([0.1], rule="nearest").tolist() == [1.0]  # 0 and 2 equally near: the higher, as insightface
    assert roc.thresholds([0.1], rule="nearest").tolist() == [0.5]  # accepted: scores >= 0.5
    assert roc.tar_at_far([0.1], rule="at_most").tolist() == [0.5]
    assert roc.thresholds([0.1], rule="at_most").tolist() == [0.95]
    with pytest.raises(DataError, match="rule"):
        roc.tar_at_far([0.1], rule="closest")


def test_auc_of_perfect_reversed_random_and_tied_scorers():
    labels = np.r_[np.ones(50), np.zeros(500)].astype(bool)
    assert ijb.roc_auc(labels.astype(float), labels) == 1.0
    assert ijb.roc_auc(-labels.astype(float), labels) == 0.0
    assert ijb.roc_auc(np.zeros(len(labels)), labels) == 0.5
    rng = np.random.default_rng(0)
    big = rng.random(200_000) < 0.5
    assert abs(ijb.roc_auc(rng.random(len(big)), big) - 0.5) < 0.01
    scores = np.round(rng.normal(labels * 1.0, 1.0), 1)
    pairwise = scores[labels][:, None] - scores[~labels][None, :]
    assert ijb.roc_auc(scores, labels) == pytest.approx((pairwise > 0).mean() + 0.5 * (pairwise == 0).mean())


def test_pool_templates_mean_within_media_sum_over_media_normalised():
    features = np.array([[1.0, 0, 0], [3.0, 0, 0], [0, 2.0, 0], [0, 0, 5.0], [0, 0, 1.0]])
    templates, medias = np.array([4, 4, 4, 2, 2]), np.array([10, 10, 11, 10, 12])  # media 10 in two templates
    pooled, ids = ijb.pool_templates(features, templates, medias)
    assert ids.tolist() == [2, 4]
    np.testing.assert_allclose(pooled, [[0, 0, 1], [np.sqrt(0.5), np.sqrt(0.5), 0]], atol=1e-6)
    order = np.random.default_rng(0).permutation(5)
    shuffled, _ = ijb.pool_templates(features[order], templates[order], medias[order], chunk=1)
    np.testing.assert_allclose(shuffled, pooled, atol=1e-6)


def test_modes_detector_weighting_norm_and_flip():
    embeddings = np.array([[10.0, 0.0], [0.0, 1.0]])
    flips = np.array([[0.0, 10.0], [0.0, 1.0]])
    scores, templates, medias = np.array([1.0, 0.5]), np.array([1, 1]), np.array([1, 2])

    def pooled(mode):
        features = ijb.image_features(embeddings, flips, scores, mode)
        return ijb.pool_templates(features, templates, medias)[0][0]

    np.testing.assert_allclose(pooled("N0D0F0"), np.array([10, 1]) / np.hypot(10, 1), atol=1e-6)
    np.testing.assert_allclose(pooled("N1D0F0"), [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)  # norm lost
    np.testing.assert_allclose(pooled("N1D1F0"), np.array([1, 0.5]) / np.hypot(1, 0.5), atol=1e-6)
    np.testing.assert_allclose(pooled("N0D0F1"), np.array([10, 12]) / np.hypot(10, 12), atol=1e-6)
    assert len(set(ijb.ALL_MODES)) == 8 and ijb.DEFAULT_MODE in ijb.ALL_MODES
    with pytest.raises(DataError, match="N2D1F1"):
        ijb.parse_mode("N2D1F1")


def test_pair_scores_in_chunks_equal_unchunked():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(40, 8)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    ids = np.arange(100, 140)
    grid = [(g, p) for g in ids[:5] for p in ids[5:]]  # dense: the matrix-product branch
    sparse = rng.choice(ids, (300, 2))  # random pairs: the row-wise branch for small chunks
    for pairs in (np.array(grid), sparse):
        p1, p2 = pairs[:, 0], pairs[:, 1]
        expected = np.sum(features[p1 - 100] * features[p2 - 100], axis=1)
        for chunk in (1, 7, 64, 1 << 20):
            np.testing.assert_allclose(ijb.pair_scores(features, ids, p1, p2, chunk=chunk), expected, atol=1e-6)
    with pytest.raises(DataError, match="template 7 has no template features"):
        ijb.pair_scores(features, ids, [100], [7])


def test_identification_cmc_and_tpir_on_a_hand_made_gallery():
    gallery = np.eye(4, dtype=np.float32)
    gallery_subjects = np.array([10, 11, 12, 13])
    probes = np.array([
        [0.9, 0.1, 0.0, 0.0],  # subject 10: rank 1, score 0.9
        [0.0, 0.6, 0.7, 0.0],  # subject 11: rank 2
        [0.5, 0.4, 0.3, 0.0],  # subject 12: rank 3
        [0.0, 0.0, 0.0, 0.4],  # subject 13: rank 1, score 0.4
        [0.8, 0.0, 0.0, 0.0],  # subject 99, non-mated, best 0.8
        [0.0, 0.2, 0.0, 0.0],  # subject 98, non-mated, best 0.2
    ], np.float32)
    probe_subjects = np.array([10, 11, 12, 13, 99, 98])
    result = ijb.identification(probes, probe_subjects, gallery, gallery_subjects, max_rank=4, fpirs=[0.1, 0.5, 1.0])
    assert (result["mated"], result["non_mated"]) == (4, 2)
    assert result["cmc"].tolist() == [0.5, 0.75, 1.0, 1.0]
    # FPIR 0.1 and 0.5: threshold 0.8 (floor(0.5 x 2) - 1 = 0): only the 0.9 top-1 hit; FPIR 1: threshold 0.2
    assert result["thresholds"].tolist() == pytest.approx([0.8, 0.8, 0.2])
    assert result["tpir"].tolist() == [0.25, 0.25, 0.5]
    other = ijb.identification(probes, probe_subjects, gallery, [20, 21, 22, 23], max_rank=4, fpirs=[0.1, 0.5, 1.0])
    assert (other["mated"], other["tpir"].tolist()) == (0, [0.0, 0.0, 0.0])
    mean = ijb.combine_galleries([result, other])  # the seed's mean: both galleries' hits over the 6 probes
    assert mean["cmc"].tolist() == pytest.approx([2 / 6, 3 / 6, 4 / 6, 4 / 6]) and mean["mated"] == 4
    assert mean["tpir"].tolist() == pytest.approx([0.125, 0.125, 0.25])
    assert "| G1 | 50.00 | 100.00 |" in ijb.identification_table({"G1": result}, ranks=(1, 4), fpirs=(0.1,))
    with pytest.raises(DataError, match="subject 10 has more than one"):
        ijb.identification(probes, probe_subjects, gallery, [10, 10, 12, 13])


def test_meta_readers_on_the_fixture(ijb_root):
    meta = ijb_meta.read_meta(ijb_root, "ijbc")
    assert len(meta.names) == 72 and meta.landmarks.shape == (72, 5, 2) and meta.face_scores.shape == (72,)
    assert len(np.unique(meta.templates)) == 18 and len(np.unique(meta.medias)) == 36
    assert len(meta.labels) == 6 * 12 and meta.labels.sum() == 12  # every gallery x probe template
    assert ijb_meta.read_meta(ijb_root / "IJBC", "IJBC").names.tolist() == meta.names.tolist()  # the subset folder
    galleries = ijb_meta.read_identification_meta(ijb_root, "IJBC")
    assert sorted(galleries) == ["G1", "G2", "probe"]
    assert galleries["G1"][0].tolist() == [1, 7, 13] and galleries["G1"][1].tolist() == [100, 102, 104]
    assert len(galleries["probe"][0]) == 12
    with pytest.raises(DataError, match="IJBB/meta"):
        ijb_meta.read_meta(ijb_root, "IJBB")


@pytest.mark.parametrize(
    ("file", "line", "bad", "message"),
    [
        ("ijbc_face_tid_mid.txt", 3, "3.jpg x 1001", r"ijbc_face_tid_mid.txt:3: field 2 'x' is not a number"),
        ("ijbc_face_tid_mid.txt", 2, "2.jpg 1", r"ijbc_face_tid_mid.txt:2: expected 'IMAGE TEMPLATE_ID MEDIA_ID'"),
        ("ijbc_name_5pts_score.txt", 4, "4.jpg 1 2 3", r"ijbc_name_5pts_score.txt:4: expected 'IMAGE x1 y1"),
        ("ijbc_template_pair_label.txt", 5, "1 3 2", r"ijbc_template_pair_label.txt:5: label 2 is not 0 or 1"),
        ("ijbc_template_pair_label.txt", 2, "1 3", r"ijbc_template_pair_label.txt:2: expected 'TEMPLATE_1"),
        ("ijbc_1N_gallery_G1.csv", 7, "7,101,x.jpg", r"ijbc_1N_gallery_G1.csv:7: template 7 is listed with two"),
    ],
)
def test_a_malformed_meta_line_names_file_and_line(ijb_root, tmp_path, file, line, bad, message):
    shutil.copytree(ijb_root / "IJBC", tmp_path / "IJBC")
    path = tmp_path / "IJBC" / "meta" / file
    lines = path.read_text().splitlines()
    lines[line - 1] = bad
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        ijb_meta.read_meta(tmp_path, "IJBC")
        ijb_meta.read_identification_meta(tmp_path, "IJBC")


def test_end_to_end_same_identity_templates_score_higher(ijb_root):
    meta = ijb_meta.read_meta(ijb_root, "IJBC")
    embeddings, flips = embed_files(_projection_embedder(), meta.image_paths(), meta.landmarks, batch_size=16,
                                    desc=None)
    assert embeddings.shape == flips.shape == (72, 32)
    scores = ijb.verification_scores(meta, embeddings, flips, ijb.ALL_MODES)
    for mode, pair_scores in scores.items():
        assert pair_scores[meta.labels].mean() > pair_scores[~meta.labels].mean() + 0.1, mode
        assert ijb.roc_auc(pair_scores, meta.labels) > 0.9, mode
    results = ijb.identification_run(meta, ijb_meta.read_identification_meta(ijb_root, "IJBC"), embeddings, flips)
    assert results["mean"]["mated"] == 12 and results["mean"]["cmc"][0] >= 0.75


def test_cli_run_cache_scores_plots_and_plot_only(ijb_root, tmp_path, capsys):
    import keras

    inputs = keras.Input((112, 112, 3))
    pooled = keras.layers.AveragePooling2D(8)(keras.layers.Rescaling(1 / 127.5, -1)(inputs))
    outputs = keras.layers.Dense(16, kernel_initializer=keras.initializers.RandomNormal(seed=0))(
        keras.layers.Flatten()(pooled)
    )
    keras.Model(inputs, outputs).save(tmp_path / "tiny.keras")
    out = {name: tmp_path / name for name in ("emb.npz", "scores.npz", "roc.png", "cmc.png")}
    argv = ["ijb", "-m", str(tmp_path / "tiny.keras"), "-d", str(ijb_root), "--modes", "N0D1F1,N1D1F1",
            "--embeddings", str(out["emb.npz"]), "--save-scores", str(out["scores.npz"]), "--plot", str(out["roc.png"]),
            "--identification", "--plot-cmc", str(out["cmc.png"]), "-b", "32"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| method | 1e-06 | 1e-05 | 1e-04 | 1e-03 | 1e-02 | 1e-01 | AUC |" in printed
    assert "| tiny_N0D1F1 |" in printed and "| tiny_N1D1F1 |" in printed and "| mean |" in printed
    for path in out.values():
        assert path.stat().st_size > 1000
    assert out["roc.png"].read_bytes()[:4] == b"\x89PNG"

    cached = ["ijb", "-d", str(ijb_root), "--embeddings", str(out["emb.npz"]), "--name", "again"]
    assert main(cached) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| again_N0D1F1 |")][0]
    assert row.replace("again", "tiny") in printed  # the cache gives the same numbers

    rocs, curves = ijb.load_scores([out["scores.npz"]])
    assert sorted(rocs) == ["scores:tiny_N0D1F1", "scores:tiny_N1D1F1"] and sorted(curves) == [
        "scores:G1", "scores:G2", "scores:mean"]
    assert main(["ijb", "--plot-only", str(out["scores.npz"])]) == 0
    replot = capsys.readouterr().out
    assert row.replace("again", "scores:tiny") in replot
    assert (tmp_path / "scores_roc.png").stat().st_size > 1000 and (tmp_path / "scores_cmc.png").stat().st_size > 1000


def test_cli_errors_are_one_line(ijb_root, tmp_path, capsys):
    assert main(["ijb", "-d", str(ijb_root)]) == 2
    assert "give -d DATA_DIR and -m MODEL" in capsys.readouterr().err
    assert main(["ijb", "-d", str(tmp_path), "-m", str(tmp_path / "none.keras")]) == 2
    assert "no IJBC/meta folder" in capsys.readouterr().err
    assert main(["ijb", "--plot-only", str(tmp_path / "none.npz")]) == 2
    assert "none.npz: score file does not exist" in capsys.readouterr().err
    (tmp_path / "notes.npz").write_text("not an npz")
    np.save(tmp_path / "array.npy", np.zeros(3))
    for name in ("notes.npz", "array.npy"):  # no traceback, and no advice to allow pickle
        assert main(["ijb", "--plot-only", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert f"{name}: not a score file written by ijb --save-scores" in err and "allow_pickle=True" not in err
    assert main(["ijb", "-d", str(ijb_root), "--embeddings", "x.npz", "-m", "m.keras", "--modes", "N1"]) == 2
    assert "mode 'N1'" in capsys.readouterr().err

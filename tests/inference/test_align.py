"""5-point alignment: Umeyama against known similarities, the warp against hand-computed pixels, and the CLI."""

import json

import numpy as np
import pytest
import simplejpeg

from keras_insightface.cli import main
from keras_insightface.errors import DataError
from keras_insightface.inference.align import ARCFACE_TEMPLATE, norm_crop, similarity_transform, template_for, warp_affine
from keras_insightface.inference.align_folder import read_landmarks

TEMPLATE = ARCFACE_TEMPLATE.astype(np.float64)


def _similarity(angle_deg, scale, shift):
    angle = np.deg2rad(angle_deg)
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix[:, 2] = shift
    return matrix


def _apply(matrix, points):
    return points @ matrix[:, :2].T + matrix[:, 2]


def test_template_and_sizes():
    np.testing.assert_allclose(similarity_transform(TEMPLATE, TEMPLATE), [[1, 0, 0], [0, 1, 0]], atol=1e-9)
    np.testing.assert_array_equal(template_for((112, 112)), TEMPLATE)
    np.testing.assert_allclose(template_for((112, 96)), TEMPLATE - [8, 0])
    np.testing.assert_allclose(template_for(224), TEMPLATE * 2)
    np.testing.assert_allclose(template_for((128, 128)), TEMPLATE + [8, 0])
    with pytest.raises(DataError, match="100x100"):
        template_for((100, 100))


def test_known_similarity_is_recovered_also_with_noise():
    truth = _similarity(20, 1.3, [12.5, -7.0])
    np.testing.assert_allclose(similarity_transform(TEMPLATE, _apply(truth, TEMPLATE)), truth, atol=1e-6)
    noisy = _apply(truth, TEMPLATE) + np.random.default_rng(0).normal(0, 0.8, (5, 2))
    # a rotation-free similarity is linear in (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty
    rows = [[x, -y, 1, 0] for x, y in TEMPLATE] + [[y, x, 0, 1] for x, y in TEMPLATE]
    (a, b, tx, ty), *_ = np.linalg.lstsq(np.array(rows), np.concatenate([noisy[:, 0], noisy[:, 1]]), rcond=None)
    got = similarity_transform(TEMPLATE, noisy)
    np.testing.assert_allclose(got, [[a, -b, tx], [b, a, ty]], atol=1e-6)
    assert np.abs(got - truth).max() < 1.5  # still near the truth


def test_no_reflection_and_degenerate_input():
    mirrored = TEMPLATE * [-1, 1]
    linear = similarity_transform(TEMPLATE, mirrored)[:, :2]
    assert np.linalg.det(linear) > 0
    assert linear[0, 0] == pytest.approx(linear[1, 1]) and linear[0, 1] == pytest.approx(-linear[1, 0])
    with pytest.raises(DataError, match="degenerate"):
        similarity_transform(np.ones((5, 2)), TEMPLATE)
    with pytest.raises(DataError, match="finite"):
        similarity_transform(TEMPLATE * [np.nan, 1], TEMPLATE)
    with pytest.raises(DataError, match="N>=2"):
        similarity_transform(TEMPLATE[:1], TEMPLATE[:1])


def test_warp_affine_bilinear_sample_by_hand():
    image = np.random.default_rng(1).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    matrix = [[1, 0, -0.25], [0, 1, -0.5]]  # output (x, y) samples the input at (x + 0.25, y + 0.5)
    out = warp_affine(image, matrix, (3, 4))
    p = image.astype(np.float64)
    expected = 0.5 * (0.75 * p[1, 2] + 0.25 * p[1, 3]) + 0.5 * (0.75 * p[2, 2] + 0.25 * p[2, 3])
    np.testing.assert_array_equal(out[1, 2], np.rint(expected))
    edge = warp_affine(image, [[1, 0, 0.5], [0, 1, 0]], (4, 5))  # column 0 samples x = -0.5: half black
    np.testing.assert_array_equal(edge[:, 0], np.rint(p[:, 0] * 0.5))


def test_warp_affine_integer_shift_is_exact_with_black_border():
    image = np.random.default_rng(2).integers(1, 256, (6, 7, 3)).astype(np.uint8)
    out = warp_affine(image, [[1, 0, 3], [0, 1, -2]], (6, 7))  # output (x, y) = input (x - 3, y + 2)
    expected = np.zeros_like(image)
    expected[:4, 3:] = image[2:, :4]
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(DataError, match="singular"):
        warp_affine(image, [[0, 0, 1], [0, 0, 1]], (6, 7))


def _dots(shape, points, sigma=2.5):
    """Gaussian dots (peak 255) centred at sub-pixel ``points``."""
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    image = np.zeros(shape[:2])
    for x, y in points:
        image += 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def _centroids(crop, template, radius=6):
    gray = crop[..., 0].astype(np.float64)
    found = []
    for x, y in template:
        x0, y0 = int(round(x)) - radius, int(round(y)) - radius
        window = np.clip(gray[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1] - 30, 0, None)
        ys, xs = np.mgrid[0 : window.shape[0], 0 : window.shape[1]]
        found.append([x0 + (xs * window).sum() / window.sum(), y0 + (ys * window).sum() / window.sum()])
    return np.array(found)


def test_norm_crop_puts_the_dots_on_the_template():
    landmarks = _apply(_similarity(-15, 1.8, [40.3, 25.7]), TEMPLATE)
    image = _dots((260, 240), landmarks)
    crop = norm_crop(image, landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(_centroids(crop, TEMPLATE), TEMPLATE, atol=1.0)
    narrow = norm_crop(image, landmarks, (112, 96))
    assert narrow.shape == (112, 96, 3)
    np.testing.assert_allclose(_centroids(narrow, template_for((112, 96))), template_for((112, 96)), atol=1.0)


def _raw_faces(root):
    """Three raw images with dots at known landmarks (one in a subfolder) and one without landmarks."""
    landmarks = {}
    for index, (name, angle) in enumerate([("a.jpg", 10), ("b.jpg", -5), ("sub/c.jpg", 25)]):
        points = _apply(_similarity(angle, 1.4 + 0.2 * index, [30 + 5 * index, 20]), TEMPLATE)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(simplejpeg.encode_jpeg(_dots((240, 220 + 10 * index), points), quality=95))
        landmarks[name] = points
    (root / "extra.jpg").write_bytes(simplejpeg.encode_jpeg(np.zeros((50, 50, 3), np.uint8)))
    return landmarks


def test_align_cli_with_csv_and_json(tmp_path, capsys):
    landmarks = _raw_faces(tmp_path / "raw")
    lines = ["path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5"] + [
        ",".join([name] + [f"{v:.4f}" for v in points.reshape(-1)]) for name, points in landmarks.items()
    ]
    (tmp_path / "marks.csv").write_text("\n".join(lines) + "\n")
    argv = ["align", str(tmp_path / "raw"), str(tmp_path / "out"), "--landmarks", str(tmp_path / "marks.csv")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert ">>>> align: 3 faces" in out and "1 images without landmarks: extra.jpg" in out
    for name in landmarks:
        crop = simplejpeg.decode_jpeg((tmp_path / "out" / name).read_bytes())
        assert crop.shape == (112, 112, 3)
        np.testing.assert_allclose(_centroids(crop, TEMPLATE), TEMPLATE, atol=1.0)
    assert not (tmp_path / "out" / "extra.jpg").exists()

    as_json = {name: points.tolist() for name, points in landmarks.items()}
    as_json["gone.jpg"] = as_json["a.jpg"]
    (tmp_path / "marks.json").write_text(json.dumps(as_json))
    argv = ["align", str(tmp_path / "raw"), str(tmp_path / "narrow"), "--landmarks", str(tmp_path / "marks.json"),
            "--size", "112x96"]
    assert main(argv) == 0
    assert "1 landmarks without image: gone.jpg" in capsys.readouterr().out
    crop = simplejpeg.decode_jpeg((tmp_path / "narrow" / "sub" / "c.jpg").read_bytes())
    assert crop.shape == (112, 96, 3)
    np.testing.assert_allclose(_centroids(crop, template_for((112, 96))), template_for((112, 96)), atol=1.0)


def test_bad_landmark_rows_are_named(tmp_path, capsys):
    _raw_faces(tmp_path / "raw")
    bad = tmp_path / "bad.csv"
    bad.write_text("a.jpg" + ",1" * 10 + "\nb.jpg" + ",1" * 9 + "\n")
    assert main(["align", str(tmp_path / "raw"), str(tmp_path / "out"), "--landmarks", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"keras-insightface align: error: {bad}:2: expected 11 fields (path, x1, y1, ..., x5, y5), found 10"
    bad.write_text("a.jpg,1,2,3,4,5,6,7,8,9,ten\n")
    with pytest.raises(DataError, match="bad.csv:1: landmarks must be numbers"):
        read_landmarks(bad)
    bad_json = tmp_path / "bad.json"
    bad_json.write_text(json.dumps({"a.jpg": [[1, 2]] * 4}))
    with pytest.raises(DataError, match="bad.json: 'a.jpg': expected 5 landmarks"):
        read_landmarks(bad_json)
    with pytest.raises(DataError, match="--size '100x80'"):
        main(["--traceback", "align", str(tmp_path / "raw"), str(tmp_path / "out"), "--landmarks", str(bad),
              "--size", "100x80"])

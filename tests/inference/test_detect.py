"""Face detection: the SCRFD adapter against ONNX graphs whose outputs encode known faces, NMS, face picking,
the letterbox, the input blob, the error cases, and ``align_folder`` with a detector."""

import sys

import matplotlib.image
import numpy as np
import pytest
import simplejpeg
from onnx import TensorProto, helper, numpy_helper, save

from keras_insightface.errors import DataError
from keras_insightface.inference.align import norm_crop
from keras_insightface.inference.align_folder import align_folder
from keras_insightface.inference.images import read_image
from keras_insightface.inference.detect import (
    Detections,
    FaceDetector,
    ScrfdDetector,
    detect_and_align,
    letterbox,
    load_detector,
    nms,
    parse_input_size,
    pick_faces,
    resize_bilinear,
)

LAYOUTS = {6: ((8, 16, 32), 2, False), 9: ((8, 16, 32), 2, True), 10: ((8, 16, 32, 64, 128), 1, False),
           15: ((8, 16, 32, 64, 128), 1, True)}


def _scrfd_onnx(path, outputs, input_shape, batch=False, taps=None):
    """An ONNX file with one input and ``outputs`` (float32 arrays) as its outputs, in the given order.

    Each output is its constant plus 0 * mean(input), so the graph depends on its input; ``taps`` maps an
    output index to flat NCHW input indices whose values that output returns instead (as (n, 1) rows).
    """
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    for index, value in enumerate(outputs):
        value = value[None] if batch else value
        if taps and index in taps:
            inits += [numpy_helper.from_array(np.array([-1], np.int64), "flat_shape"),
                      numpy_helper.from_array(np.array(taps[index], np.int64), f"taps{index}"),
                      numpy_helper.from_array(np.array(value.shape, np.int64), f"shape{index}")]
            nodes += [helper.make_node("Reshape", ["input", "flat_shape"], [f"flat{index}"]),
                      helper.make_node("Gather", [f"flat{index}", f"taps{index}"], [f"picked{index}"]),
                      helper.make_node("Reshape", [f"picked{index}", f"shape{index}"], [f"out{index}"])]
        else:
            inits.append(numpy_helper.from_array(value.astype(np.float32), f"const{index}"))
            nodes.append(helper.make_node("Add", [f"const{index}", "nothing"], [f"out{index}"]))
    graph = helper.make_graph(
        nodes, "scrfd_stand_in", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info(f"out{i}", TensorProto.FLOAT, None) for i in range(len(outputs))], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


def _empty_outputs(count, input_hw):
    """All-zero SCRFD outputs for ``input_hw``: per stride scores (K*A, 1), boxes (K*A, 4), keypoints (K*A, 10)."""
    strides, anchors, kps = LAYOUTS[count]
    rows = [(input_hw[0] // s) * (input_hw[1] // s) * anchors for s in strides]
    widths = (1, 4, 10) if kps else (1, 4)
    return [np.zeros((n, width), np.float32) for width in widths for n in rows]


def _encode(outputs, count, input_hw, stride_index, row, column, anchor, score, box, points):
    """Write one face (canvas coordinates) into the outputs as SCRFD does: stride-unit distances from its anchor."""
    strides, anchors, kps = LAYOUTS[count]
    stride, levels = strides[stride_index], len(strides)
    at = (row * (input_hw[1] // stride) + column) * anchors + anchor
    centre = np.array([column * stride, row * stride], np.float64)
    outputs[stride_index][at] = score
    outputs[levels + stride_index][at] = np.concatenate([centre - box[:2], box[2:] - centre]) / stride
    if kps:
        outputs[2 * levels + stride_index][at] = (np.asarray(points) - centre).reshape(-1) / stride


def _points(box):
    """Five landmark-like points inside ``box`` (eyes, nose, mouth corners)."""
    x1, y1, x2, y2 = box
    fractions = np.array([[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]])
    return np.array([x1, y1]) + fractions * [x2 - x1, y2 - y1]


# (output count, batch dim, model input shape, ScrfdDetector input_size, image (h, w), resized (h, w) by hand)
CASES = [
    (9, False, [1, 3, "h", "w"], (64, 96), (150, 300), (48, 96)),  # 150/300 < 64/96: width 96, height 0.5 * 96
    (15, True, [1, 3, 128, 128], (640, 640), (300, 200), (128, 85)),  # static wins; int(128 * 200 / 300) = 85
    (6, True, ["n", 3, "h", "w"], 64, (100, 80), (64, 51)),  # int(64 * 80 / 100) = 51
    (10, False, [1, 3, 128, 256], (640, 640), (90, 160), (128, 227)),  # 90/160 > 128/256: int(128 * 160 / 90)
]


@pytest.mark.parametrize("count, batch, shape, input_size, image_hw, resized", CASES)
def test_scrfd_decodes_known_faces_in_image_coordinates(tmp_path, count, batch, shape, input_size, image_hw, resized):
    input_hw = (shape[2], shape[3]) if isinstance(shape[2], int) else parse_input_size(input_size)
    levels = len(LAYOUTS[count][0])
    last = (input_hw[0] // LAYOUTS[count][0][-1] - 1, input_hw[1] // LAYOUTS[count][0][-1] - 1)
    faces = {  # name: (stride index, row, column, anchor, score, canvas box)
        "a": (0, 2, 3, LAYOUTS[count][1] - 1, 0.9, (10.0, 4.0, 40.0, 30.0)),
        "a_duplicate": (1, 1, 1, 0, 0.7, (11.0, 4.0, 41.0, 30.0)),  # IoU 29/31 with "a": suppressed
        "b": (levels - 1, *last, LAYOUTS[count][1] - 1, 0.6, (44.0, 40.0, 62.0, 60.0)),  # not "edge"'s anchor
        "low": (1, 3, 3, 0, 0.3, (0.0, 40.0, 20.0, 60.0)),  # under the 0.5 threshold
        "edge": (2, 1, 1, 0, 0.5, (20.0, 36.0, 40.0, 62.0)),  # exactly the threshold: kept
    }
    outputs = _empty_outputs(count, input_hw)
    for stride_index, row, column, anchor, score, box in faces.values():
        _encode(outputs, count, input_hw, stride_index, row, column, anchor, score, np.array(box), _points(box))
    path = _scrfd_onnx(tmp_path / "det.onnx", outputs, shape, batch)
    detector = load_detector(path, input_size=input_size)
    assert detector.input_size == input_hw
    image = np.random.default_rng(count).integers(0, 256, (*image_hw, 3)).astype(np.uint8)
    found = detector.detect(image)

    scale = np.array([resized[1] / image_hw[1], resized[0] / image_hw[0]])
    kept = [faces[name] for name in ("a", "b", "edge")]
    np.testing.assert_allclose(found.scores, [0.9, 0.6, 0.5], rtol=1e-6)
    np.testing.assert_allclose(found.boxes, [np.array(f[5]) / np.tile(scale, 2) for f in kept], rtol=1e-5)
    if LAYOUTS[count][2]:
        np.testing.assert_allclose(found.landmarks, [_points(f[5]) / scale for f in kept], rtol=1e-5)
    else:
        assert found.landmarks is None
    assert found.boxes.dtype == np.float32 and found.scores.shape == (3,)

    lower = ScrfdDetector(path, input_size=input_size, score_threshold=0.25, nms_threshold=0.95)
    np.testing.assert_allclose(lower.detect(image).scores, [0.9, 0.7, 0.6, 0.5, 0.3], rtol=1e-6)


def test_input_blob_is_rgb_normalised_nchw(tmp_path):
    """Stride-32 scores read the blob's R and B values at pixel (y=3, x=5): ``(x - 127.5) / 128`` in RGB order.

    The two anchors' boxes differ, so a BGR blob would swap which box gets which score.
    """
    outputs = _empty_outputs(9, (32, 32))
    outputs[5][:] = [[0, 0, 1, 1], [0, 0, 0.5, 0.5]]  # stride-32 distances of the (0, 0) cell's two anchors
    height = width = 32
    taps = {2: [0 * height * width + 3 * width + 5, 2 * height * width + 3 * width + 5]}
    path = _scrfd_onnx(tmp_path / "blob.onnx", outputs, [1, 3, 32, 32], taps=taps)
    image = np.zeros((16, 32, 3), np.uint8)  # letterboxed at scale 1: the canvas holds it unchanged
    image[3, 5] = (255, 64, 192)
    found = ScrfdDetector(path).detect(image)
    assert found.scores.tolist() == [(255 - 127.5) / 128, (192 - 127.5) / 128]
    assert found.boxes.tolist() == [[0, 0, 32, 32], [0, 0, 16, 16]]
    image[3, 5] = (64, 64, 64)
    assert len(ScrfdDetector(path).detect(image)) == 0


def test_nms_is_greedy_and_strict():
    boxes = [[0, 0, 10, 10], [4, 0, 14, 10], [8, 0, 18, 10]]  # IoUs: a-b 60/140, b-c 60/140, a-c 20/180
    assert nms(boxes, [0.9, 0.8, 0.7], 0.4).tolist() == [0, 2]  # b goes, so c (only touching a) stays
    assert nms(boxes, [0.7, 0.9, 0.8], 0.4).tolist() == [1]
    assert nms(boxes, [0.9, 0.8, 0.7], 0.45).tolist() == [0, 1, 2]
    half = [[0, 0, 10, 10], [0, 0, 10, 20]]  # IoU exactly 100 / 200
    assert nms(half, [0.9, 0.8], 0.5).tolist() == [0, 1]
    assert nms(half, [0.9, 0.8], 0.49).tolist() == [0]
    assert nms(np.zeros((0, 4)), [], 0.4).tolist() == []


def test_pick_faces_prefers_big_central_faces_and_detections_sort():
    found = Detections([[0, 0, 10, 10], [60, 0, 100, 40], [30, 30, 70, 70]], [0.9, 0.8, 0.6], np.zeros((3, 5, 2)))
    # area - 2 * squared centre offset in a 100x100 image: 100 - 2 * 4050, 1600 - 2 * 1800, 1600 - 0
    assert pick_faces(found, (100, 100, 3), 1).boxes.tolist() == [[30, 30, 70, 70]]
    assert pick_faces(found, (100, 100, 3), 2).scores.tolist() == pytest.approx([0.8, 0.6])
    assert len(pick_faces(found, (100, 100, 3), 0)) == 3
    unsorted = Detections([[0, 0, 1, 1], [2, 2, 3, 3]], [0.2, 0.7], [np.zeros((5, 2)), np.ones((5, 2))])
    assert unsorted.scores.tolist() == pytest.approx([0.7, 0.2]) and unsorted.landmarks[0, 0, 0] == 1
    with pytest.raises(DataError, match="N landmarks"):
        Detections([[0, 0, 1, 1]], [0.5], np.zeros((1, 4, 2)))


def test_resize_and_letterbox():
    image = np.random.default_rng(3).integers(0, 256, (4, 6, 3)).astype(np.uint8)
    halved = resize_bilinear(image, 2, 3)  # samples at 2 * i + 0.5: the mean of each 2x2 block
    blocks = image.astype(np.float64).reshape(2, 2, 3, 2, 3).mean(axis=(1, 3))
    np.testing.assert_array_equal(halved, np.rint(blocks))
    np.testing.assert_array_equal(resize_bilinear(image, 4, 6), image)
    canvas, scale = letterbox(np.full((300, 200, 3), 77, np.uint8), (128, 128))
    assert scale == (85 / 200, 128 / 300)
    assert (canvas[:, :85] == 77).all() and (canvas[:, 85:] == 0).all()
    canvas, scale = letterbox(np.full((30, 90, 3), 9, np.uint8), (64, 96))  # wide: width 96, height 32
    assert scale == (96 / 90, 32 / 30) and (canvas[:32] == 9).all() and (canvas[32:] == 0).all()


def test_detector_errors_name_the_file(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="missing.onnx: detector model file does not exist"):
        ScrfdDetector(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(DataError, match="junk.onnx: cannot load the ONNX model"):
        ScrfdDetector(tmp_path / "junk.onnx")
    seven = _scrfd_onnx(tmp_path / "seven.onnx", _empty_outputs(6, (32, 32)) + [np.zeros((1, 1))], [1, 3, 32, 32])
    with pytest.raises(DataError, match="seven.onnx: 7 outputs is not a SCRFD layout"):
        ScrfdDetector(seven)
    nhwc = _scrfd_onnx(tmp_path / "nhwc.onnx", _empty_outputs(6, (32, 32)), [1, 32, 32, 3])
    with pytest.raises(DataError, match=r"nhwc.onnx: input 'input' has shape \[1, 32, 32, 3\], expected NCHW"):
        ScrfdDetector(nhwc)
    dynamic = _scrfd_onnx(tmp_path / "dynamic.onnx", _empty_outputs(9, (64, 64)), [1, 3, "h", "w"])
    with pytest.raises(DataError, match="multiple of the largest stride 32"):
        ScrfdDetector(dynamic, input_size=(64, 80))
    with pytest.raises(DataError, match=r"dynamic.onnx: output 'out0' has shape \[128, 1\], expected \(512, 1\)"):
        ScrfdDetector(dynamic, input_size=128).detect(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(DataError, match="uint8 RGB"):
        ScrfdDetector(dynamic, input_size=64).detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(DataError, match="--det-size '64x'"):
        parse_input_size("64x")
    with pytest.raises(DataError, match="det.pt: unknown detector format"):
        load_detector(tmp_path / "det.pt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(DataError, match=r"dynamic.onnx: .*pip install keras_insightface\[onnx\]"):
        ScrfdDetector(dynamic)


def test_detect_and_align_with_scrfd_matches_norm_crop(tmp_path):
    input_hw = (128, 128)
    outputs = _empty_outputs(15, input_hw)
    box = np.array([30.0, 20.0, 80.0, 90.0])
    _encode(outputs, 15, input_hw, 2, 2, 2, 0, 0.8, box, _points(box))
    detector = ScrfdDetector(_scrfd_onnx(tmp_path / "det.onnx", outputs, [1, 3, 128, 128], batch=True))
    image = np.random.default_rng(5).integers(0, 256, (300, 200, 3)).astype(np.uint8)
    crops, found = detect_and_align(image, detector, (112, 96))
    landmarks = _points(box) / [85 / 200, 128 / 300]
    np.testing.assert_allclose(found.landmarks[0], landmarks, rtol=1e-5)
    assert len(crops) == 1 and crops[0].shape == (112, 96, 3)
    assert np.abs(crops[0].astype(int) - norm_crop(image, landmarks, (112, 96))).max() <= 1

    no_kps = _empty_outputs(10, input_hw)
    with pytest.raises(DataError, match="finds no landmarks"):
        detect_and_align(image, ScrfdDetector(_scrfd_onnx(tmp_path / "boxes.onnx", no_kps, [1, 3, 128, 128])))


class ShapeDetector(FaceDetector):
    """A stand-in detector: the faces of an image looked up by its (height, width)."""

    def __init__(self, faces):
        self.faces = faces

    def detect(self, image):
        boxes, scores, landmarks = self.faces.get(image.shape[:2], ([], [], []))
        return Detections(boxes, scores, np.reshape(landmarks, (-1, 5, 2)))


def test_align_folder_with_a_detector(tmp_path):
    rng = np.random.default_rng(7)
    central, corner = _points((50, 40, 110, 120)), _points((0, 0, 20, 24))
    faces = {
        (150, 140): ([[20, 30, 120, 130]], [0.8], [_points((20, 30, 120, 130))]),
        (160, 160): ([[0, 0, 20, 24], [50, 40, 110, 120]], [0.95, 0.7], [corner, central]),  # central wins
    }
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    images = {"a.jpg": (150, 140), "b.png": (160, 160), "sub/c.jpg": (90, 90)}
    for name, shape in images.items():
        pixels = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
        if name.endswith(".png"):
            matplotlib.image.imsave(raw / name, pixels)
        else:
            (raw / name).write_bytes(simplejpeg.encode_jpeg(pixels, quality=95))
    report = align_folder(raw, tmp_path / "out", detector=ShapeDetector(faces), quality=90)
    assert report == {"aligned": 2, "no_face": ["sub/c.jpg"]}
    for name, out, landmarks in (("a.jpg", "a.jpg", faces[(150, 140)][2][0]), ("b.png", "b.jpg", central)):
        expected = simplejpeg.encode_jpeg(norm_crop(read_image(raw / name), landmarks), quality=90)
        assert (tmp_path / "out" / out).read_bytes() == expected
    assert not (tmp_path / "out" / "sub").exists()
    with pytest.raises(DataError, match="exactly one of a landmarks file and a face detector"):
        align_folder(raw, tmp_path / "out")
    with pytest.raises(DataError, match="exactly one"):
        align_folder(raw, tmp_path / "out", tmp_path / "marks.csv", detector=ShapeDetector(faces))


def test_cli_aligns_and_compares_photos_with_a_detector(tmp_path, capsys):
    import keras

    from keras_insightface.cli import main
    from keras_insightface.evaluation.compare import compare

    outputs = _empty_outputs(15, (128, 128))
    box = np.array([30.0, 20.0, 80.0, 90.0])
    _encode(outputs, 15, (128, 128), 2, 2, 2, 0, 0.8, box, _points(box))
    detector = _scrfd_onnx(tmp_path / "det.onnx", outputs, [1, 3, "h", "w"], batch=True)
    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a.jpg", "b.jpg"):
        (raw / name).write_bytes(simplejpeg.encode_jpeg(rng.integers(0, 256, (128, 128, 3)).astype(np.uint8), 95))
    assert main(["align", str(raw), str(tmp_path / "out"), "--detector", str(detector), "--det-size", "128"]) == 0
    assert ">>>> align: 2 faces" in capsys.readouterr().out
    assert main(["align", str(raw), str(tmp_path / "none"), "--detector", str(detector), "--det-size", "128",
                 "--det-threshold", "0.9"]) == 0
    assert "2 images without a detected face: a.jpg, b.jpg" in capsys.readouterr().out

    inputs = keras.Input((112, 112, 3))
    embedding = keras.layers.Flatten(name="embedding")(keras.layers.AveragePooling2D(16)(inputs))
    model_path = tmp_path / "basic.keras"
    keras.Model(inputs, embedding).save(model_path)
    assert main(["compare", str(raw / "a.jpg"), str(raw / "b.jpg"), "-m", str(model_path), "--threshold", "0.5",
                 "--detector", str(detector), "--det-size", "128"]) == 0
    printed = capsys.readouterr().out
    crops = [read_image(tmp_path / "out" / name) for name in ("a.jpg", "b.jpg")]
    expected = compare(str(model_path), crops[0], crops[1])["similarity"]  # the same crops, aligned beforehand
    similarity = float(printed.split()[1])
    assert abs(similarity - expected) < 0.02  # the align command's crops went through JPEG once more
    assert ("SAME person" in printed) == (similarity > 0.5) and "given number 0.5" in printed
    assert main(["compare", str(raw / "a.jpg"), str(raw / "b.jpg"), "-m", str(model_path)]) == 2  # raw photos
    assert "align it first (keras-insightface align) or pass a face detector" in capsys.readouterr().err

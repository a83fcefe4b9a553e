"""Face detection for alignment: a ``FaceDetector`` interface and an adapter for insightface's SCRFD ONNX models.

``align_folder`` and ``norm_crop`` need five landmarks per face; raw photos come without them. A detector finds
faces and their landmarks; ``detect_and_align`` turns its best faces into ArcFace crops.

Any detector plugs in by subclassing ``FaceDetector`` and returning ``Detections`` from ``detect``. For example
a RetinaFace wrapper whose ``predict`` gives ``[(x1, y1, x2, y2, score, [[x, y] x 5]), ...]``::

    class RetinaFaceDetector(FaceDetector):
        def __init__(self, model):
            self.model = model

        def detect(self, image):
            faces = self.model.predict(image)            # uint8 RGB (H, W, 3) in, image pixel coordinates out
            return Detections([f[:4] for f in faces], [f[4] for f in faces], [f[5] for f in faces])

``ScrfdDetector`` runs insightface's SCRFD models (``det_10g.onnx``, ``det_2.5g.onnx``, ``det_500m.onnx``, also
as the ``scrfd_*_bnkps`` exports) through onnxruntime (``pip install keras_insightface[onnx]``). The layout it
decodes (insightface's ``model_zoo/scrfd.py``):
    - outputs: all score maps, then all box distance maps, then all keypoint distance maps (one per stride),
      ``(K * A, C)`` rows or with a leading batch dimension ``(1, K * A, C)``. 6 outputs: strides 8/16/32, 2
      anchors, no keypoints; 9: the same with keypoints; 10 / 15: strides 8..128, 1 anchor, without / with.
    - anchor ``(x, y)`` centres: the stride grid of the input (row by row), each repeated for its ``A`` anchors.
    - distances are in stride units: a box is ``centre -/+ stride * (left, top | right, bottom)``, a keypoint
      ``centre + stride * (dx, dy)``.
    - input: RGB, ``(x - 127.5) / 128``, NCHW float32, the image letterboxed (aspect kept, top-left, zero
      padding) into the model's static input size, else ``input_size``.

Example:
    >>> import numpy as np
    >>> class CentreFace(FaceDetector):   # a stand-in: one face in the middle of any image
    ...     def detect(self, image):
    ...         h, w = image.shape[:2]
    ...         marks = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.72], [0.62, 0.72]]) * [w, h]
    ...         return Detections([[0.2 * w, 0.2 * h, 0.8 * w, 0.9 * h]], [0.9], [marks])
    >>> crops, faces = detect_and_align(np.zeros((120, 100, 3), "uint8"), CentreFace())
    >>> crops[0].shape, faces.boxes.tolist()
    ((112, 112, 3), [[20.0, 24.0, 80.0, 108.0]])
"""

import abc
import os
from pathlib import Path

import numpy as np

from keras_insightface.errors import DataError
from keras_insightface.inference.align import norm_crop

SCRFD_LAYOUTS = {  # output count -> (strides, anchors per grid cell, has keypoints)
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}
DETECTOR_SUFFIXES = (".onnx",)


class Detections:
    """Faces found in one image, sorted by score (highest first).

    ``boxes`` (N, 4) float32 ``x1, y1, x2, y2``, ``scores`` (N,) float32 and ``landmarks`` (N, 5, 2) float32
    (left eye, right eye, nose, left and right mouth corner as ``x, y``), all in the image's pixel coordinates;
    ``landmarks`` is ``None`` for a detector that finds no landmarks. The constructor sorts by score.
    """

    def __init__(self, boxes, scores, landmarks=None):
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if landmarks is not None:
            landmarks = np.asarray(landmarks, dtype=np.float32)
            if landmarks.size == 0:
                landmarks = landmarks.reshape(0, 5, 2)
        if len(scores) != len(boxes) or (landmarks is not None and landmarks.shape != (len(boxes), 5, 2)):
            shapes = f"boxes {boxes.shape}, scores {scores.shape}, landmarks {np.shape(landmarks)}"
            raise DataError(f"detections need N boxes (N, 4), N scores and N landmarks (N, 5, 2), received {shapes}")
        order = np.argsort(-scores, kind="stable")
        self.boxes, self.scores = boxes[order], scores[order]
        self.landmarks = None if landmarks is None else landmarks[order]

    def __len__(self):
        return len(self.scores)

    def __repr__(self):
        return f"Detections({len(self)} faces, scores {self.scores.round(3).tolist()})"

    def take(self, indices):
        """The detections at ``indices`` (re-sorted by score)."""
        indices = np.asarray(indices, dtype=np.intp)
        landmarks = None if self.landmarks is None else self.landmarks[indices]
        return Detections(self.boxes[indices], self.scores[indices], landmarks)


class FaceDetector(abc.ABC):
    """Finds faces: ``detect(uint8 RGB (H, W, 3) image) -> Detections`` in that image's pixel coordinates."""

    @abc.abstractmethod
    def detect(self, image):
        """The faces in ``image`` (uint8 RGB, (H, W, 3)) as ``Detections``."""


def check_image(image, where="image"):
    """``image`` as a uint8 RGB (H, W, 3) array, or a DataError naming ``where``."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise DataError(f"{where}: expected a uint8 RGB (H, W, 3) image, received {image.dtype} {image.shape}")
    return image


def nms(boxes, scores, threshold):
    """Greedy non-maximum suppression: indices kept, best score first.

    Going down the scores, a box is dropped when its IoU (plain areas, no ``+1`` pixel convention) with a kept
    box is above ``threshold``.

    Example:
        >>> nms([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], [0.8, 0.9, 0.7], 0.4).tolist()
        [1, 2]
    """
    boxes, scores = np.asarray(boxes, dtype=np.float64).reshape(-1, 4), np.asarray(scores, dtype=np.float64)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    order, keep = np.argsort(-scores, kind="stable"), []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        low = np.maximum(boxes[best, :2], boxes[rest, :2])
        high = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(high - low, 0, None), axis=1)
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= threshold]
    return np.asarray(keep, dtype=np.intp)


def pick_faces(detections, image_shape, max_faces):
    """The ``max_faces`` big, central faces (all when ``max_faces`` <= 0), sorted by score.

    insightface's rule for ``max_num``: rank by box area minus twice the squared distance from the box centre to
    the image centre, so the subject of a photo beats a higher-scored face at its edge.
    """
    if max_faces <= 0 or len(detections) <= max_faces:
        return detections
    boxes = detections.boxes.astype(np.float64)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2 - [image_shape[1] / 2, image_shape[0] / 2]
    value = area - 2.0 * np.sum(centre**2, axis=1)
    return detections.take(np.argsort(-value, kind="stable")[:max_faces])


def resize_bilinear(image, height, width):
    """``image`` (H, W, C) uint8 resized to ``(height, width)`` as ``cv2.resize`` (INTER_LINEAR) does.

    Pixel centres map onto pixel centres (``src = (dst + 0.5) * scale - 0.5``), edges are repeated; up to
    OpenCV's fixed-point rounding.

    Example:
        >>> resize_bilinear(np.array([[[0], [100]]], "uint8"), 1, 4)[..., 0].tolist()
        [[0, 25, 75, 100]]
    """
    image = np.asarray(image)

    def taps(size_in, size_out):
        source = np.clip((np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5, 0, size_in - 1)
        low = np.floor(source).astype(np.intp)
        return low, np.minimum(low + 1, size_in - 1), source - low

    y0, y1, fy = taps(image.shape[0], height)
    x0, x1, fx = taps(image.shape[1], width)
    fy, fx = fy[:, None, None], fx[None, :, None]
    top, bottom = image[y0], image[y1]  # gather before converting: a large photo stays uint8
    upper = top[:, x0] * (1 - fx) + top[:, x1] * fx
    lower = bottom[:, x0] * (1 - fx) + bottom[:, x1] * fx
    return np.clip(np.rint(upper * (1 - fy) + lower * fy), 0, 255).astype(np.uint8)


def letterbox(image, size):
    """``image`` resized, aspect kept, into the top-left of a black ``size = (height, width)`` canvas.

    Returns ``(canvas, (scale_x, scale_y))``: a canvas point divided by the scales is the image point. The
    resized side lengths are truncated to integers as insightface does, so the two scales can differ slightly.
    """
    height, width = image.shape[:2]
    if height / width > size[0] / size[1]:
        new_height, new_width = size[0], max(1, int(size[0] * width / height))
    else:
        new_height, new_width = max(1, int(size[1] * height / width)), size[1]
    canvas = np.zeros((size[0], size[1], 3), dtype=np.uint8)
    canvas[:new_height, :new_width] = resize_bilinear(image, new_height, new_width)
    return canvas, (new_width / width, new_height / height)


def parse_input_size(size):
    """A detector input size: ``"640"`` or ``640`` -> ``(640, 640)``, ``"480x640"`` or ``(480, 640)`` -> ``(480, 640)``.

    Height x width, as ``--size``; a bad value gets a DataError naming ``--det-size``.
    """
    parts = str(size).lower().split("x") if isinstance(size, str) else list(np.atleast_1d(size))
    try:
        pair = tuple(int(p) for p in parts) * (2 if len(parts) == 1 else 1)
    except (TypeError, ValueError):
        pair = ()
    if len(pair) != 2 or min(pair) <= 0:
        raise DataError(f"--det-size {size!r}: expected SIDE or HEIGHTxWIDTH, e.g. 640 or 480x640")
    return pair


def _anchor_centres(rows, columns, stride, anchors):
    """``(rows * columns * anchors, 2)`` float32 ``x, y`` grid points, row by row, each repeated per anchor."""
    xs, ys = np.meshgrid(np.arange(columns), np.arange(rows))
    centres = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    return np.repeat(centres, anchors, axis=0)


class ScrfdDetector(FaceDetector):
    """insightface's SCRFD face detector (an ONNX file) run by onnxruntime; see the module docstring.

    ``input_size`` (height, width, or one int for a square) is used only when the model's input shape is
    dynamic; sides must be multiples of the largest stride (32 or 128). Faces scoring at least
    ``score_threshold`` survive, then greedy NMS drops boxes overlapping a better one by IoU > ``nms_threshold``;
    ``max_faces`` > 0 keeps that many big, central faces (``pick_faces``). Boxes and landmarks come back in the
    original image's coordinates, each axis divided by its letterbox scale.
    """

    def __init__(self, model_path, input_size=(640, 640), score_threshold=0.5, nms_threshold=0.4, max_faces=0):
        self.path = Path(model_path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: detector model file does not exist")
        if not (np.isfinite(score_threshold) and 0.0 <= nms_threshold <= 1.0 and int(max_faces) >= 0):
            raise DataError(
                f"{self.path}: need a finite score threshold, an NMS threshold in [0, 1] and max_faces >= 0, received"
                f" {score_threshold}, {nms_threshold}, {max_faces}"
            )
        self.score_threshold, self.nms_threshold = float(score_threshold), float(nms_threshold)
        self.max_faces = int(max_faces)
        self.session = self._session()
        spec = self.session.get_inputs()[0]
        shape = list(spec.shape)
        if len(shape) != 4 or shape[1] != 3:
            raise DataError(f"{self.path}: input {spec.name!r} has shape {shape}, expected NCHW with 3 channels")
        self.input_name = spec.name
        self.output_names = [output.name for output in self.session.get_outputs()]
        if len(self.output_names) not in SCRFD_LAYOUTS:
            raise DataError(
                f"{self.path}: {len(self.output_names)} outputs is not a SCRFD layout (expected 6, 9, 10 or 15:"
                " scores, box distances and optionally keypoint distances per stride)"
            )
        self.strides, self.anchors, self.has_landmarks = SCRFD_LAYOUTS[len(self.output_names)]
        static = all(isinstance(side, int) and side > 0 for side in shape[2:])
        self.input_size = tuple(shape[2:]) if static else parse_input_size(input_size)
        if not static and any(side % self.strides[-1] for side in self.input_size):
            raise DataError(
                f"{self.path}: input size {self.input_size[0]}x{self.input_size[1]} (height x width) must be a"
                f" multiple of the largest stride {self.strides[-1]}"
            )

    def _session(self):
        try:
            import onnxruntime
        except ImportError as error:
            raise DataError(
                f"{self.path}: SCRFD detectors need onnxruntime ({error}); pip install keras_insightface[onnx]"
            ) from None
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            return onnxruntime.InferenceSession(os.fspath(self.path), providers=providers)
        except Exception as error:  # onnxruntime raises its own exception types for files that are not ONNX
            raise DataError(f"{self.path}: cannot load the ONNX model ({type(error).__name__}: {error})") from None

    def __repr__(self):
        size = f"{self.input_size[0]}x{self.input_size[1]}"
        return f"ScrfdDetector({str(self.path)!r}, input {size}, {len(self.output_names)} outputs)"

    def detect(self, image):
        image = check_image(image)
        canvas, scale = letterbox(image, self.input_size)
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self.session.run(self.output_names, {self.input_name: blob})
        boxes, scores, landmarks = self._decode(outputs)
        scale = np.array(scale, dtype=np.float32)
        boxes /= np.tile(scale, 2)
        keep = nms(boxes, scores, self.nms_threshold)
        found = Detections(boxes[keep], scores[keep], landmarks[keep] / scale if self.has_landmarks else None)
        return pick_faces(found, image.shape, self.max_faces)

    def _decode(self, outputs):
        """Canvas-coordinate boxes, scores and landmarks (or ``None``) of the anchors scoring >= the threshold."""
        count = len(self.strides)
        boxes, scores, landmarks = [], [], []
        for index, stride in enumerate(self.strides):
            rows, columns = self.input_size[0] // stride, self.input_size[1] // stride
            centres = _anchor_centres(rows, columns, stride, self.anchors)
            score = self._rows(outputs, index, len(centres), 1)[:, 0]
            hit = score >= self.score_threshold
            distance = self._rows(outputs, index + count, len(centres), 4)[hit] * stride
            boxes.append(np.concatenate([centres[hit] - distance[:, :2], centres[hit] + distance[:, 2:]], axis=1))
            scores.append(score[hit])
            if self.has_landmarks:
                offsets = self._rows(outputs, index + 2 * count, len(centres), 10)[hit] * stride
                landmarks.append(centres[hit][:, None, :] + offsets.reshape(-1, 5, 2))
        landmarks = np.concatenate(landmarks) if self.has_landmarks else None
        return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32), landmarks

    def _rows(self, outputs, index, expected, columns):
        """Output ``index`` as a float32 ``(expected, columns)`` array (a leading batch of one dropped)."""
        value = np.asarray(outputs[index], dtype=np.float32)
        if value.ndim == 3 and value.shape[0] == 1:
            value = value[0]
        if value.shape != (expected, columns):
            size = f"{self.input_size[0]}x{self.input_size[1]}"
            raise DataError(
                f"{self.path}: output {self.output_names[index]!r} has shape {list(np.shape(outputs[index]))},"
                f" expected ({expected}, {columns}) for input {size} (height x width); is this a SCRFD model?"
            )
        return value


def load_detector(path, **kwargs):
    """A ``FaceDetector`` from a model file: ``.onnx`` -> ``ScrfdDetector(path, **kwargs)``."""
    if Path(path).suffix.lower() not in DETECTOR_SUFFIXES:
        raise DataError(f"{path}: unknown detector format; expected a SCRFD .onnx model (e.g. det_10g.onnx)")
    return ScrfdDetector(path, **kwargs)


def detect_and_align(image, detector, image_size=(112, 112), max_faces=1):
    """Detect faces in ``image`` (uint8 RGB) and align them: ``(crops, detections)``, one crop per detection.

    ``max_faces`` > 0 keeps that many big, central faces (``pick_faces``; 1: the subject of the photo), 0 keeps
    all; the crops are ``norm_crop(image, landmarks, image_size)`` in score order.
    """
    image = check_image(image)
    found = detector.detect(image)
    if not isinstance(found, Detections):
        raise DataError(f"{detector!r}.detect returned {type(found).__name__}, expected Detections")
    if found.landmarks is None:
        raise DataError(
            f"{detector!r} finds no landmarks (e.g. a SCRFD model with 6 or 10 outputs); alignment needs them"
        )
    found = pick_faces(found, image.shape, max_faces)
    return [norm_crop(image, landmarks, image_size) for landmarks in found.landmarks], found


def face_aligner(detector, image_size=(112, 112)):
    """``image -> aligned crop`` of the image's main face (``detect_and_align`` with one face), for the
    ``prepare`` hook of ``compare`` and ``Gallery``; an image without a face is a DataError."""

    def prepare(image):
        crops, _ = detect_and_align(image, detector, image_size, max_faces=1)
        if not crops:
            raise DataError(f"no face found by {detector!r}")
        return crops[0]

    return prepare

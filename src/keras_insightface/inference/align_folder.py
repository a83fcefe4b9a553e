"""Align a folder of face images onto the ArcFace template: ``keras-insightface align``.

Landmarks come from a CSV (``path,x1,y1,...,x5,y5`` per line, header optional) or a JSON file
(``{"path": [[x, y] x 5]}``), or from a face detector (``detect.py``, e.g. SCRFD). Crops are written as JPEG
under the same relative paths.
"""

import csv
import json
import os
from pathlib import Path

import numpy as np
import simplejpeg

from keras_insightface.errors import DataError
from keras_insightface.inference.align import norm_crop
from keras_insightface.inference.detect import detect_and_align
from keras_insightface.inference.images import IMAGE_SUFFIXES, read_image


def _points(values, where):
    """Ten numbers (or five pairs) -> a finite float64 (5, 2) array; anything else names ``where``."""
    try:
        points = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        points = np.zeros(0)
    if points.size != 10 or not np.isfinite(points).all():
        raise DataError(f"{where}: expected 5 landmarks as 10 finite numbers (x1, y1, ..., x5, y5), received {values}")
    return points.reshape(5, 2)


def _key(path):
    return Path(os.path.normpath(str(path))).as_posix()


def read_landmarks(path):
    """``{relative image path: (5, 2) landmarks}`` from a ``.json`` file or a CSV file (any other suffix)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: landmarks file does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    if path.suffix.lower() == ".json":
        try:
            table = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(table, dict):
            kind = type(table).__name__
            raise DataError(f"{path}: expected a JSON object {{image path: [[x, y] x 5]}}, found {kind}")
        return {_key(name): _points(value, f"{path}: {name!r}") for name, value in table.items()}
    landmarks = {}
    for line, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not "".join(row).strip():
            continue
        if line == 1 and len(row) == 11 and not _is_number(row[1]):
            continue  # a header
        if len(row) != 11:
            raise DataError(f"{path}:{line}: expected 11 fields (path, x1, y1, ..., x5, y5), found {len(row)}")
        try:
            values = [float(v) for v in row[1:]]
        except ValueError:
            raise DataError(f"{path}:{line}: landmarks must be numbers, found {row[1:]}") from None
        landmarks[_key(row[0].strip())] = _points(values, f"{path}:{line}")
    return landmarks


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def align_folder(src_dir, dst_dir, landmarks_path=None, image_size=(112, 112), quality=95, detector=None):
    """Align every image under ``src_dir`` into ``dst_dir`` (same relative paths, JPEG; a PNG's or BMP's crop is ``.jpg``).

    The landmarks come from exactly one of ``landmarks_path`` (see ``read_landmarks``) and ``detector`` (a
    ``detect.FaceDetector``: each image's big, central face, ``detect.detect_and_align`` with ``max_faces=1``).
    Returns ``{"aligned": count, "without_landmarks": [paths], "missing_images": [landmark paths with no
    image]}`` with a landmarks file, ``{"aligned": count, "no_face": [paths]}`` with a detector.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if (landmarks_path is None) == (detector is None):
        raise DataError("align_folder needs exactly one of a landmarks file and a face detector")
    if not src_dir.is_dir():
        raise DataError(f"{src_dir}: source folder does not exist")
    images = sorted(p for p in src_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if detector is not None:
        return _align_detected(src_dir, dst_dir, images, detector, image_size, quality)
    landmarks = read_landmarks(landmarks_path)
    aligned, without = 0, []
    found = set()
    for image_path in images:
        name = image_path.relative_to(src_dir).as_posix()
        if name not in landmarks:
            without.append(name)
            continue
        found.add(name)
        _write_crop(dst_dir / name, norm_crop(read_image(image_path), landmarks[name], image_size), quality)
        aligned += 1
    missing = sorted(set(landmarks) - found)
    return {"aligned": aligned, "without_landmarks": without, "missing_images": missing}


def _align_detected(src_dir, dst_dir, images, detector, image_size, quality):
    """``align_folder`` with landmarks from ``detector``: the best face of each image, or the image in ``no_face``."""
    aligned, no_face = 0, []
    for image_path in images:
        name = image_path.relative_to(src_dir).as_posix()
        crops, _ = detect_and_align(read_image(image_path), detector, image_size, max_faces=1)
        if not crops:
            no_face.append(name)
            continue
        _write_crop(dst_dir / name, crops[0], quality)
        aligned += 1
    return {"aligned": aligned, "no_face": no_face}


def _write_crop(out, crop, quality):
    """``crop`` as a JPEG at ``out`` (a ``.png`` / ``.bmp`` name becomes ``.jpg``), creating the folders."""
    if out.suffix.lower() in (".png", ".bmp"):
        out = out.with_suffix(".jpg")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(simplejpeg.encode_jpeg(crop, quality=quality))

"""The one image reader of the tools that take face images from files or arrays (compare, search, align, IJB,
export checks): JPEG, PNG and BMP files, or uint8 RGB arrays, with the alignment contract.

A recognition model takes aligned face crops of its input size (112x112 ArcFace crops for most); ``load_face``
checks that, or runs a ``prepare`` hook (a detector + ``norm_crop``) that makes the crop.

Example:
    >>> import numpy as np
    >>> from PIL import Image
    >>> path = getfixture("tmp_path") / "face.bmp"
    >>> Image.fromarray(np.full((112, 112, 3), 7, "uint8")).save(path)
    >>> read_image(path).shape, int(read_image(path)[0, 0, 0])
    ((112, 112, 3), 7)
    >>> load_face(path, (112, 96))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    keras_insightface.errors.DataError: ...face.bmp: image is 112x112, the model takes aligned 96x112 face crops; ...
"""

import os
from pathlib import Path

import numpy as np

from keras_insightface.data.decode import decode_image
from keras_insightface.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def read_image(image, where=None):
    """A file path (JPEG / PNG / BMP) or uint8 ``(H, W, 3)`` array -> uint8 RGB array; ``where`` names it in errors."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise DataError(f"{path}: image does not exist")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise DataError(f"{path}: cannot read the image ({error.strerror or error})") from None
        return decode_image(data, None, where=str(path))
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise DataError(
            f"{where or 'image'}: expected a file path or a uint8 (H, W, 3) RGB array, received {array.dtype}"
            f" {array.shape}"
        )
    return array


def load_face(image, size, prepare=None, where=None):
    """The aligned ``size = (height, width)`` face crop of ``image`` (path or array), ``prepare``-d when given.

    Without ``prepare`` an image of another size is an error: it is not an aligned crop for this model.
    """
    where = str(image) if isinstance(image, (str, os.PathLike)) else where or "image"
    face = read_image(image, where)
    if prepare is not None:
        try:
            face = prepare(face)
        except DataError as error:
            raise DataError(error if str(error).startswith(where) else f"{where}: {error}") from None
        face = np.asarray(face)
        if face.dtype != np.uint8 or face.shape != (*size, 3):
            raise DataError(
                f"{where}: prepare returned a {face.dtype} {face.shape} array, the model takes uint8"
                f" {(*size, 3)} face crops"
            )
        return face
    if face.shape[:2] != tuple(size):
        raise DataError(
            f"{where}: image is {face.shape[1]}x{face.shape[0]}, the model takes aligned {size[1]}x{size[0]} face"
            " crops; align it first (keras-insightface align) or pass a face detector"
        )
    return face

"""Decode encoded face images to uint8 RGB arrays: the one decoder of every reader (loader workers, tools)."""

import io

import numpy as np
import simplejpeg

from keras_insightface.errors import DataError


def _decode_other(data, where):
    """PNG, BMP (and any other format Pillow reads) -> uint8 RGB; palettes, grey and alpha are converted."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DataError(f"{where}: cannot decode image (not a JPEG, PNG or BMP image)") from None
    with image:
        return np.asarray(image.convert("RGB"))


def decode_image(data, image_size=(112, 112), where="image"):
    """JPEG (simplejpeg) or PNG/BMP (Pillow) bytes -> uint8 (H, W, 3) RGB; ``where`` names the record in errors.

    ``image_size`` ``(height, width)`` is the size the image must have (aligned faces); ``None`` takes any size.
    """
    data = bytes(data)
    try:
        if simplejpeg.is_jpeg(data):
            image = simplejpeg.decode_jpeg(data, colorspace="RGB")
        else:
            image = _decode_other(data, where)
    except DataError:
        raise
    except Exception as error:  # decoders raise ValueError, OSError, SyntaxError... all mean "corrupt"
        raise DataError(f"{where}: cannot decode image ({type(error).__name__}: {error})") from None
    if image_size is not None and image.shape[:2] != tuple(image_size):
        raise DataError(
            f"{where}: image is {image.shape[1]}x{image.shape[0]}, expected aligned {image_size[1]}x{image_size[0]} faces"
        )
    return np.ascontiguousarray(image)

"""Decode encoded face images to uint8 RGB arrays: the one decoder of every reader (loader workers, tools).

JPEG is recognised by its start-of-image marker (``FF D8 FF``), not by ``simplejpeg.is_jpeg``, which rejects
valid JPEGs with bytes after their end marker (camera files; records stored in RecordIO parts). The image size is
read from the header before anything is decoded: an image of the wrong size, or above ``max_pixels`` (64M pixels,
or ``$KERAS_INSIGHTFACE_MAX_PIXELS``), is refused without allocating its pixels.

Example:
    >>> import numpy as np, simplejpeg
    >>> data = simplejpeg.encode_jpeg(np.zeros((112, 112, 3), "uint8")) + b"trailing bytes"
    >>> is_jpeg(data), simplejpeg.is_jpeg(data), decode_image(data).shape
    (True, False, (112, 112, 3))
"""

import io
import os

import numpy as np
import simplejpeg

from keras_insightface.errors import DataError

JPEG_SOI = b"\xff\xd8\xff"
MAX_PIXELS = 64_000_000  # 8000 x 8000: larger images are refused before decoding (a JPEG bomb costs GBs)
MAX_PIXELS_VARIABLE = "KERAS_INSIGHTFACE_MAX_PIXELS"  # another limit for every command (raw photos, align)
PILLOW_FORMATS = ("PNG", "BMP")  # what Pillow may open: not GIF, TIFF, WEBP... ("not a JPEG, PNG or BMP image")


def max_pixels_limit():
    """The pixel limit: ``$KERAS_INSIGHTFACE_MAX_PIXELS`` when set (a positive integer), else ``MAX_PIXELS``."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise DataError(f"{MAX_PIXELS_VARIABLE}={text!r}: expected a positive number of pixels, e.g. 64000000")
    return int(text)


def is_jpeg(data):
    """Whether ``data`` starts like a JPEG (the SOI marker and the first segment's marker byte)."""
    return bytes(data[:3]) == JPEG_SOI


def _check_size(height, width, image_size, max_pixels, where):
    if image_size is not None and (height, width) != tuple(image_size):
        raise DataError(f"{where}: image is {width}x{height}, expected aligned {image_size[1]}x{image_size[0]} faces")
    if height * width > max_pixels:
        raise DataError(f"{where}: image is {width}x{height} = {height * width} pixels, above the limit of "
                        f"{max_pixels} (max_pixels, ${MAX_PIXELS_VARIABLE}); refused before decoding")


def _read_size(data):
    """``((height, width), None)`` from the image's header (nothing decoded), or ``(None, why)`` when it does not
    read: simplejpeg for JPEG, Pillow (PNG and BMP only) for the rest."""
    from PIL import Image, UnidentifiedImageError

    if is_jpeg(data):
        try:
            return simplejpeg.decode_jpeg_header(data)[:2], None
        except ValueError as error:
            return None, f"unreadable JPEG header: {error}"
    try:
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
            return (image.height, image.width), None
    except UnidentifiedImageError:
        return None, "not a JPEG, PNG or BMP image"
    except Exception as error:  # a damaged header: Pillow's plugins raise SyntaxError, OSError, ValueError...
        return None, f"{type(error).__name__}: {error}"


def _pixels(data):
    """uint8 RGB pixels of an image whose header read; Pillow converts palettes, grey and alpha."""
    if is_jpeg(data):
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    from PIL import Image

    with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
        return np.asarray(image.convert("RGB"))


def check_image(data, where="image", max_pixels=None):
    """Raise a ``DataError`` naming ``where`` unless ``data`` starts like a JPEG, PNG or BMP image whose header
    reads and whose size is within ``max_pixels``; nothing is decoded. Returns ``(height, width)``."""
    size, why = _read_size(bytes(data))
    if why is not None:
        raise DataError(f"{where}: not a readable JPEG, PNG or BMP image ({why})")
    _check_size(*size, None, max_pixels_limit() if max_pixels is None else max_pixels, where)
    return size


def decode_image(data, image_size=(112, 112), where="image", max_pixels=None):
    """JPEG (simplejpeg) or PNG/BMP (Pillow) bytes -> uint8 (H, W, 3) RGB; ``where`` names the record in errors.

    ``image_size`` ``(height, width)`` is the size the image must have (aligned faces); ``None`` takes any size up
    to ``max_pixels`` (default ``max_pixels_limit()``). Sizes are checked from the header, before decoding.
    """
    data = bytes(data)
    size, why = _read_size(data)
    if why is not None:
        raise DataError(f"{where}: cannot decode image ({why})")
    _check_size(*size, image_size, max_pixels_limit() if max_pixels is None else max_pixels, where)
    try:
        image = _pixels(data)
    except Exception as error:  # decoders raise ValueError, OSError, SyntaxError... all mean "corrupt"
        raise DataError(f"{where}: cannot decode image ({type(error).__name__}: {error})") from None
    return np.ascontiguousarray(image)

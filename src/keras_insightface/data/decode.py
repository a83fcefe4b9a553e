"""Decode encoded face images to uint8 RGB arrays of a fixed size (runs in loader workers)."""

import io

import numpy as np
import simplejpeg

from keras_insightface.errors import DataError


def decode_image(data, image_size=(112, 112), where="image"):
    """JPEG (simplejpeg) or PNG/BMP bytes -> uint8 (H, W, 3) RGB; ``where`` names the record in errors."""
    data = bytes(data)
    try:
        if simplejpeg.is_jpeg(data):
            image = simplejpeg.decode_jpeg(data, colorspace="RGB")
        else:
            import matplotlib.image

            image = matplotlib.image.imread(io.BytesIO(data))
            if image.dtype != np.uint8:
                image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    except Exception as error:  # decoders raise ValueError, OSError, SyntaxError... all mean "corrupt"
        raise DataError(f"{where}: cannot decode image ({type(error).__name__}: {error})") from None
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = image[..., :3]
    if image.shape[:2] != tuple(image_size):
        raise DataError(
            f"{where}: image is {image.shape[1]}x{image.shape[0]}, expected aligned {image_size[1]}x{image_size[0]} faces"
        )
    return np.ascontiguousarray(image)

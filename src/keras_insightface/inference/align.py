"""5-point face alignment: the ArcFace template, a least-squares similarity onto it, and a numpy warp.

Evaluation sets such as IJB ship raw images with five landmarks (left eye, right eye, nose, left and right
mouth corner, as image ``x, y``); recognition models expect the crop insightface's ``face_align.norm_crop``
makes: the similarity (Umeyama 1991, no reflection) mapping the landmarks onto the ArcFace template, applied
as ``cv2.warpAffine`` does (bilinear, black border). OpenCV is not needed: the warp is vectorised numpy.

``align_folder.py`` runs it over a folder of images, ``detect.py`` finds the landmarks of raw photos.

Example:
    >>> import numpy as np
    >>> image = np.zeros((200, 200, 3), "uint8")
    >>> landmarks = ARCFACE_TEMPLATE.astype(float) * 1.5 + 10      # the same face, larger and moved
    >>> norm_crop(image, landmarks).shape
    (112, 112, 3)
    >>> (similarity_transform(landmarks, ARCFACE_TEMPLATE).round(4) + 0.0).tolist()
    [[0.6667, 0.0, -6.6667], [0.0, 0.6667, -6.6667]]
"""

import numpy as np

from keras_insightface.errors import DataError

ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
ARCFACE_TEMPLATE.setflags(write=False)


def template_for(image_size=(112, 112)):
    """The five template points (float64, 5x2) for a ``(height, width)`` crop (an int: a square), as insightface.

    Square sides that are a multiple of 112 scale the 112x112 template; other multiples of 128 scale it by
    side / 128 and shift it right by 8 * side / 128 (insightface's ``estimate_norm``). ``(112k, 96k)`` is the
    112x112 template shifted left by 8 (the 96-wide crop insightface's mxnet pipeline used), scaled by k.

    Example:
        >>> template_for((112, 96))[0].round(4).tolist()
        [30.2946, 51.6963]
        >>> template_for(128)[0].round(4).tolist()
        [46.2946, 51.6963]
    """
    height, width = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    if height == width and height > 0 and height % 112 == 0:
        ratio, shift_x = height / 112, 0.0
    elif height == width and height > 0 and height % 128 == 0:
        ratio, shift_x = height / 128, 8.0 * height / 128
    elif height > 0 and height % 112 == 0 and width * 112 == height * 96:
        ratio, shift_x = height / 112, -8.0 * height / 112
    else:
        raise DataError(
            f"aligned size {height}x{width} (height x width) is not supported; use a square multiple of 112 or 128,"
            " or 112x96 (or a multiple of it)"
        )
    template = ARCFACE_TEMPLATE.astype(np.float64) * ratio
    template[:, 0] += shift_x
    return template


def similarity_transform(src, dst):
    """The least-squares rotation + uniform scale + translation taking ``src`` (N, 2) onto ``dst`` (N, 2).

    Umeyama's closed form with the reflection fix, so a mirrored point set still gets a proper rotation.
    Returns ``M`` (2, 3) float64 with ``dst ~ src @ M[:, :2].T + M[:, 2]``.

    Example:
        >>> similarity_transform([[0, 0], [1, 0]], [[1, 1], [1, 3]]).round(6).tolist()
        [[0.0, -2.0, 1.0], [2.0, 0.0, 1.0]]
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape[1] != 2 or src.shape != dst.shape or len(src) < 2:
        raise DataError(f"similarity_transform needs two (N>=2, 2) point sets, received {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise DataError("similarity_transform: the points are not all finite")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_centred, dst_centred = src - src_mean, dst - dst_mean
    src_var = np.sum(src_centred**2) / len(src)
    covariance = dst_centred.T @ src_centred / len(src)
    u, singular, vt = np.linalg.svd(covariance)
    if src_var <= 1e-12 * max(1.0, np.abs(src_mean).max()) ** 2 or singular[0] <= 1e-12:
        raise DataError("similarity_transform: the points are degenerate (all equal), no similarity is defined")
    signs = np.array([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rotation = u @ np.diag(signs) @ vt
    scale = float(singular @ signs) / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def warp_affine(image, matrix, size):
    """``image`` (H, W, C) uint8 warped by the 2x3 ``matrix`` into a ``size = (height, width)`` uint8 image.

    Output pixel ``(x, y)`` is the bilinear sample of the input at ``matrix^-1 (x, y)``, pixels outside the
    input counting as 0: ``cv2.warpAffine(image, matrix, (width, height), borderValue=0)``, up to OpenCV's
    1/32-pixel fixed-point rounding.

    Example:
        >>> image = np.arange(12, dtype="uint8").reshape(2, 2, 3)
        >>> warp_affine(image, [[1, 0, 1], [0, 1, 0]], (2, 3))[..., 0].tolist()
        [[0, 0, 3], [0, 6, 9]]
    """
    image, matrix = np.asarray(image), np.asarray(matrix, dtype=np.float64)
    if image.dtype != np.uint8 or image.ndim != 3:
        raise DataError(f"warp_affine needs a uint8 (H, W, C) image, received {image.dtype} {image.shape}")
    if matrix.shape != (2, 3) or not np.isfinite(matrix).all():
        raise DataError(f"warp_affine needs a finite 2x3 matrix, received {matrix.tolist()}")
    linear = matrix[:, :2]
    if abs(np.linalg.det(linear)) < 1e-12:
        raise DataError(f"warp_affine: the matrix {matrix.tolist()} is singular")
    inverse = np.linalg.inv(linear)
    height, width = int(size[0]), int(size[1])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    points = np.stack([xs - matrix[0, 2], ys - matrix[1, 2]], axis=-1) @ inverse.T
    source_x, source_y = points[..., 0], points[..., 1]
    padded = np.pad(image.astype(np.float64), ((1, 1), (1, 1), (0, 0)))  # a zero ring: the black border
    x0, y0 = np.floor(source_x), np.floor(source_y)
    fx, fy = (source_x - x0)[..., None], (source_y - y0)[..., None]
    columns = [np.clip(x0 + 1 + d, 0, image.shape[1] + 1).astype(np.intp) for d in (0, 1)]
    rows = [np.clip(y0 + 1 + d, 0, image.shape[0] + 1).astype(np.intp) for d in (0, 1)]
    top = padded[rows[0], columns[0]] * (1 - fx) + padded[rows[0], columns[1]] * fx
    bottom = padded[rows[1], columns[0]] * (1 - fx) + padded[rows[1], columns[1]] * fx
    return np.clip(np.rint(top * (1 - fy) + bottom * fy), 0, 255).astype(np.uint8)


def norm_crop(image, landmarks, image_size=(112, 112)):
    """The aligned face crop: ``landmarks`` (5, 2) mapped onto ``template_for(image_size)``.

    Example:
        >>> norm_crop(np.zeros((64, 64, 3), "uint8"), ARCFACE_TEMPLATE / 2, (112, 96)).shape
        (112, 96, 3)
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2):
        raise DataError(f"norm_crop needs (5, 2) landmarks, received shape {landmarks.shape}")
    size = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    return warp_affine(image, similarity_transform(landmarks, template_for(size)), size)


def parse_size(text):
    """``"112x96"`` -> ``(112, 96)`` (height x width); a bare ``"112"`` is square."""
    parts = str(text).lower().split("x")
    try:
        size = tuple(int(p) for p in parts) * (2 if len(parts) == 1 else 1)
    except ValueError:
        size = ()
    if len(size) != 2:
        raise DataError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 112x112 or 112x96")
    try:
        template_for(size)
    except DataError as error:
        raise DataError(f"--size {text!r}: {error}") from None
    return size

"""Augmentation inside the compiled training step: per-sample random ops drawn with ``keras.random``.

The CPU side only decodes JPEGs; every random choice here is drawn per sample with static shapes, so a
batch compiles once. Where samples pick different ops, the candidate results are computed for the whole
batch and selected with ``ops.where`` (only the ops some sample can pick are computed).

Levels follow TF-models' RandAugment/AutoAugment (``MAX_LEVEL = 10``); the op definitions follow PIL.
Images stay float between ops (TF-models rounds to uint8 after each), so results differ from PIL by
at most about one grey level.
Geometric sizes are fractions of the image side so that one setting fits 112 px faces and small tests:
``TRANSLATE_CONST = 100 / 224`` (TF-models' 100 px on ImageNet crops, ~50 px on a 112 px face) and
``CUTOUT_CONST = 40 / 112`` (the seed's ``cutout_const=40`` on 112 px faces).
"""

import math
from types import MappingProxyType

import keras
import numpy as np
from keras import ops

MAX_LEVEL = 10.0
FILL_VALUE = 128.0
TRANSLATE_CONST = 100 / 224
CUTOUT_CONST = 40 / 112
CROP_FRACTION = 100 / 112

ENHANCE_OPS = ("Color", "Contrast", "Brightness", "Sharpness")
AFFINE_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
OP_NAMES = (
    ("Identity", "AutoContrast", "Equalize", "Invert", "Posterize", "Solarize", "SolarizeAdd", "Cutout")
    + ENHANCE_OPS
    + AFFINE_OPS
)
FACE_OPS = ("AutoContrast", "Equalize", "Color", "Contrast", "Brightness", "Sharpness", "Cutout")

POLICIES = MappingProxyType(
    {
        "v0": (
            (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
            (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
            (("Color", 0.4, 1), ("Rotate", 0.6, 8)),
            (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
            (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)),
            (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
            (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)),
            (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
            (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
            (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
            (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
            (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
            (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
            (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
            (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)),
            (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
            (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)),
            (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
            (("Color", 1.0, 0), ("Rotate", 0.6, 2)),
            (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
            (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
            (("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)),
            (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)),
            (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
            (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
        ),
        "face": (
            (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)),
            (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
            (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
            (("Color", 0.6, 1), ("Equalize", 1.0, 2)),
            (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)),
            (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
            (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)),
            (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
            (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
            (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)),
        ),
    }
)


def _per_sample(value):
    """A scalar or a (B,) value as a float tensor that broadcasts against (B, H, W, C)."""
    return ops.reshape(ops.cast(value, "float32"), (-1, 1, 1, 1))


def _random_flip(images, seed):
    """Each sample mirrored left-right with probability 0.5."""
    flip = keras.random.uniform((ops.shape(images)[0], 1, 1, 1), seed=seed) < 0.5
    return ops.where(flip, ops.flip(images, axis=2), images)


def _random_centers(batch, height, width, seed):
    """(B, 2) uniform (row, col) pixel positions."""
    rows = keras.random.randint((batch,), 0, height, seed=seed)
    return ops.stack([rows, keras.random.randint((batch,), 0, width, seed=seed)], axis=1)


def _grey(images):
    """PIL's "L" conversion (ITU-R 601-2 luma), kept as one channel."""
    return images[..., 0:1] * 0.299 + images[..., 1:2] * 0.587 + images[..., 2:3] * 0.114


def _blend(degenerate, images, factor):
    """PIL ``ImageEnhance``: factor 0 gives ``degenerate``, 1 the image, above 1 extrapolates (clipped)."""
    return ops.clip(degenerate + factor * (images - degenerate), 0.0, 255.0)


def _autocontrast(images):
    """Per sample and channel, stretch min..max to 0..255; flat channels stay as they are."""
    low = ops.min(images, axis=(1, 2), keepdims=True)
    span = ops.max(images, axis=(1, 2), keepdims=True) - low
    stretched = (images - low) * (255.0 / ops.maximum(span, 1e-6))
    return ops.where(span > 0, ops.clip(stretched, 0.0, 255.0), images)


def _equalize(images):
    """PIL ``ImageOps.equalize`` per sample and channel (on rounded values): 256-bin histogram, CDF lookup."""
    batch, height, width, channels = ops.shape(images)
    values = ops.cast(ops.clip(ops.round(images), 0, 255), "int32")
    bins = values + ops.reshape(ops.arange(batch * channels, dtype="int32"), (batch, 1, 1, channels)) * 256
    ones = ops.ones((batch * height * width * channels,), "int32")
    hist = ops.segment_sum(ones, ops.reshape(bins, (-1,)), num_segments=batch * channels * 256)
    hist = ops.reshape(hist, (batch * channels, 256))
    top = ops.take_along_axis(hist, ops.reshape(ops.max(values, axis=(1, 2)), (-1, 1)), axis=1)
    step = (height * width - top) // 255
    lut = (ops.cumsum(hist, axis=1) + step // 2) // ops.maximum(step, 1)
    lut = ops.clip(ops.concatenate([ops.zeros_like(lut[:, :1]), lut[:, :-1]], axis=1), 0, 255)
    lut = ops.where(step > 0, lut, ops.arange(256, dtype="int32")[None])
    return ops.cast(ops.take(ops.reshape(lut, (-1,)), bins), "float32")


def _smooth(images):
    """PIL ``ImageFilter.SMOOTH`` (3x3 kernel [[1,1,1],[1,5,1],[1,1,1]]/13), border pixels kept."""
    height, width = ops.shape(images)[1:3]
    window = sum(images[:, i : height - 2 + i, j : width - 2 + j] for i in range(3) for j in range(3))
    inner = (window + 4.0 * images[:, 1:-1, 1:-1]) / 13.0
    border = np.pad(np.zeros((height - 2, width - 2, 1), bool), ((1, 1), (1, 1), (0, 0)), constant_values=True)
    return ops.where(border, images, ops.pad(inner, ((0, 0), (1, 1), (1, 1), (0, 0))))


def _cutout(images, pad, center, fill_value):
    """Fill the square ``center ± pad`` (rows, cols; clipped at the borders) with ``fill_value``."""
    height, width = ops.shape(images)[1:3]
    center = ops.cast(center, "float32")
    pad = _per_sample(pad)
    rows = ops.reshape(ops.arange(height, dtype="float32"), (1, height, 1, 1))
    cols = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, width, 1))
    center_row, center_col = _per_sample(center[:, 0]), _per_sample(center[:, 1])
    inside = (rows >= center_row - pad) & (rows < center_row + pad) & (cols >= center_col - pad)
    return ops.where(inside & (cols < center_col + pad), fill_value, images)


def _affine_matrix(name, magnitude, sign, batch, height, width, translate_const):
    """(B, 8) output->input transforms as TF-models: rotate about the centre, shear/translate from the origin."""
    level = ops.broadcast_to(ops.cast(magnitude, "float32") * ops.cast(sign, "float32") / MAX_LEVEL, (batch,))
    one, zero = ops.ones_like(level), ops.zeros_like(level)
    if name == "Rotate":
        angle = level * (30.0 * math.pi / 180.0)
        cos, sin = ops.cos(angle), ops.sin(angle)
        x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
        y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
        rows = (cos, -sin, x_offset, sin, cos, y_offset)
    elif name == "ShearX":
        rows = (one, level * 0.3, zero, zero, one, zero)
    elif name == "ShearY":
        rows = (one, zero, zero, level * 0.3, one, zero)
    elif name == "TranslateX":
        rows = (one, zero, level * translate_const * width, zero, one, zero)
    else:
        rows = (one, zero, zero, zero, one, level * translate_const * height)
    return ops.stack([*rows, zero, zero], axis=1)


def _warp(images, matrix, fill_value):
    """Nearest-neighbour affine warp (as TF-models), uncovered pixels set to ``fill_value``."""
    return ops.image.affine_transform(
        images,
        matrix,
        interpolation="nearest",
        fill_mode="constant",
        fill_value=fill_value,
        data_format="channels_last",
    )


def apply_op(
    images,
    name,
    magnitude,
    sign=1.0,
    center=None,
    translate_const=TRANSLATE_CONST,
    cutout_const=CUTOUT_CONST,
    fill_value=FILL_VALUE,
):
    """Apply one RandAugment/AutoAugment op by name, deterministically, to float (B, H, W, 3) 0..255 images.

    ``magnitude`` is the level (0..10, a scalar or one per sample). Arguments as TF-models: enhance
    factor ``level/10*1.8+0.1``; rotate ``level/10*30`` degrees, shear ``level/10*0.3``, translate
    ``level/10*translate_const*side``, each times ``sign`` (the layer draws ±1); posterize keeps
    ``int(level/10*4)`` bits; solarize threshold ``int(level/10*256)``; solarize-add adds
    ``int(level/10*110)`` below 128; cutout fills a square of half side ``int(level/10*cutout_const*side)``
    around ``center`` ((B, 2) rows/cols, default the image centre). Contrast blends towards the mean grey
    level as PIL (TF-models uses ``H*W/256`` there, a known slip).

    Example:
        >>> import numpy as np
        >>> ramp = np.tile(np.linspace(50, 150, 8, dtype="float32")[None, None, :, None], (1, 8, 1, 3))
        >>> out = apply_op(ramp, "AutoContrast", 0)
        >>> float(out.min()), float(out.max())
        (0.0, 255.0)
    """
    images = ops.cast(images, "float32")
    batch, height, width = ops.shape(images)[:3]
    if name in AFFINE_OPS:
        matrix = _affine_matrix(name, magnitude, sign, batch, height, width, translate_const)
        return _warp(images, matrix, fill_value)
    fraction = _per_sample(magnitude) / MAX_LEVEL
    factor = fraction * 1.8 + 0.1
    if name == "Identity":
        return images
    if name == "AutoContrast":
        return _autocontrast(images)
    if name == "Equalize":
        return _equalize(images)
    if name == "Invert":
        return 255.0 - images
    if name == "Posterize":
        scale = ops.power(2.0, 8.0 - ops.floor(fraction * 4.0))
        return ops.floor(ops.round(images) / scale) * scale
    if name == "Solarize":
        return ops.where(images < ops.floor(fraction * 256.0), images, 255.0 - images)
    if name == "SolarizeAdd":
        return ops.where(images < 128.0, ops.clip(images + ops.floor(fraction * 110.0), 0.0, 255.0), images)
    if name == "Cutout":
        center = ops.convert_to_tensor([[height // 2, width // 2]] * batch) if center is None else center
        return _cutout(images, ops.floor(fraction * cutout_const * min(height, width) + 1e-3), center, fill_value)
    if name == "Color":
        return _blend(_grey(images), images, factor)
    if name == "Contrast":
        return _blend(ops.mean(_grey(images), axis=(1, 2, 3), keepdims=True), images, factor)
    if name == "Brightness":
        return _blend(ops.zeros_like(images), images, factor)
    if name == "Sharpness":
        return _blend(_smooth(images), images, factor)
    raise ValueError(f"Unknown augmentation op {name!r}; known: {', '.join(OP_NAMES)}")


def _is_identity(name, level, size, cutout_const):
    """Whether op ``name`` at the static ``level`` leaves every 0..255 image unchanged (so it is skipped)."""
    fraction = level / MAX_LEVEL
    if name in ENHANCE_OPS:
        return abs(fraction * 1.8 + 0.1 - 1.0) < 1e-6
    if name in AFFINE_OPS:
        return fraction == 0
    return {
        "Identity": True,
        "Posterize": int(fraction * 4) >= 8,
        "Solarize": int(fraction * 256) >= 256,
        "SolarizeAdd": int(fraction * 110) == 0,
        "Cutout": int(fraction * cutout_const * size + 1e-3) == 0,
    }.get(name, False)


def _check_ops(names):
    unknown = [name for name in names if name not in OP_NAMES]
    if unknown:
        raise ValueError(f"Unknown augmentation ops {unknown}; known: {', '.join(OP_NAMES)}")


def _color_jitter(images, level, seed):
    """The seed's ``random_status`` 1..2: brightness shift, then contrast and saturation factors, per sample."""
    batch = ops.shape(images)[0]
    delta = keras.random.uniform((batch, 1, 1, 1), -12.75 * level, 12.75 * level, seed=seed)
    images = ops.clip(images + delta, 0.0, 255.0)
    if level < 2:
        return images
    low, high = 1.0 - 0.1 * level, 1.0 + 0.1 * level
    contrast = keras.random.uniform((batch, 1, 1, 1), low, high, seed=seed)
    mean = ops.mean(images, axis=(1, 2), keepdims=True)
    images = ops.clip((images - mean) * contrast + mean, 0.0, 255.0)
    return _adjust_saturation(images, keras.random.uniform((batch, 1, 1, 1), low, high, seed=seed))


def _adjust_saturation(images, factor):
    """HSV saturation times ``factor`` (clipped at 1) without the HSV round trip: channels move away from max."""
    value = ops.max(images, axis=-1, keepdims=True)
    chroma = value - ops.min(images, axis=-1, keepdims=True)
    scale = ops.where(chroma > 0, ops.minimum(factor, value / ops.maximum(chroma, 1e-6)), 1.0)
    return value - (value - images) * scale


def _adjust_hue(images, delta):
    """Shift the HSV hue by ``delta`` (fraction of the circle) with value and chroma kept, as TF's adjust_hue."""
    red, green, blue = images[..., 0], images[..., 1], images[..., 2]
    value = ops.max(images, axis=-1)
    chroma = value - ops.min(images, axis=-1)
    safe = ops.maximum(chroma, 1e-6)
    hue = ops.where(value == green, (blue - red) / safe + 2.0, (red - green) / safe + 4.0)
    hue = ops.where(value == red, (green - blue) / safe, hue)
    hue = ops.mod(hue + 6.0 * ops.reshape(delta, (-1, 1, 1)), 6.0)
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = ops.mod(hue + offset, 6.0)
        channels.append(value - chroma * ops.clip(ops.minimum(k, 4.0 - k), 0.0, 1.0))
    return ops.stack(channels, axis=-1)


def _crop_resize(images, seed):
    """Random crop of ``CROP_FRACTION`` of each side (100x100 of 112), resized back bilinearly.

    The resize is two per-sample interpolation matrices (half-pixel centres, edges clamped, as
    ``tf.image.resize``), i.e. two batched matmuls, which beats a bilinear gather on CPU and GPU alike.
    """
    batch, height, width = ops.shape(images)[:3]

    def weights(size):
        crop = round(size * CROP_FRACTION)
        start = ops.cast(keras.random.randint((batch, 1, 1), 0, size - crop + 1, seed=seed), "float32")
        grid = ops.arange(size, dtype="float32")
        source = ops.clip(start + (grid[None, :, None] + 0.5) * (crop / size) - 0.5, 0.0, size - 1.0)
        return ops.maximum(0.0, 1.0 - ops.abs(source - grid[None, None, :]))

    rows = weights(height)
    return ops.einsum("bjw,biwc->bijc", weights(width), ops.einsum("bih,bhwc->biwc", rows, images))


def _apply_stage(images, choices, choice, seed, translate_const, cutout_const, fill_value=FILL_VALUE):
    """Apply ``choices[choice[b]]`` (name, probability, level) to each sample b; ops no entry uses are not computed.

    All geometric picks share one warp with a per-sample matrix.
    """
    batch, height, width = ops.shape(images)[:3]
    size = min(height, width)
    skip = [_is_identity(name, level, size, cutout_const) for name, _, level in choices]
    names = tuple(dict.fromkeys(name for (name, _, _), skipped in zip(choices, skip) if not skipped))
    if not names:
        return images
    op_table = [len(names) if skipped else names.index(name) for (name, _, _), skipped in zip(choices, skip)]
    op = ops.take(ops.convert_to_tensor(op_table, "int32"), choice)
    level = ops.take(ops.convert_to_tensor([float(level) for _, _, level in choices]), choice)
    if any(prob < 1 for (_, prob, _), skipped in zip(choices, skip) if not skipped):
        prob = ops.take(ops.convert_to_tensor([float(prob) for _, prob, _ in choices]), choice)
        op = ops.where(keras.random.uniform((batch,), seed=seed) < prob, op, len(names))
    sign = center = None
    if any(name in AFFINE_OPS for name in names):
        sign = ops.where(keras.random.uniform((batch,), seed=seed) < 0.5, -1.0, 1.0)
    if "Cutout" in names:
        center = _random_centers(batch, height, width, seed)
    out = images
    warp_names = [name for name in names if name in AFFINE_OPS]
    if warp_names:
        matrix = ops.broadcast_to(ops.convert_to_tensor([1.0, 0, 0, 0, 1, 0, 0, 0]), (batch, 8))
        for name in warp_names:
            pick = ops.expand_dims(op == names.index(name), 1)
            matrix = ops.where(pick, _affine_matrix(name, level, sign, batch, height, width, translate_const), matrix)
        warps = ops.any(ops.stack([op == names.index(name) for name in warp_names]), axis=0)
        out = ops.where(_per_sample(warps) > 0, _warp(images, matrix, fill_value), out)
    for index, name in enumerate(names):
        if name not in AFFINE_OPS:
            result = apply_op(images, name, level, sign, center, translate_const, cutout_const, fill_value)
            out = ops.where(_per_sample(op == index) > 0, result, out)
    return out


def _parse_policy(policy):
    """A preset name or a list of sub-policies -> tuple of tuples of (name, probability, level)."""
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"Unknown auto_augment_policy {policy!r}; presets: {', '.join(POLICIES)}")
        return POLICIES[policy]
    parsed = tuple(tuple((str(name), float(prob), float(level)) for name, prob, level in sub) for sub in policy)
    if not parsed or not all(parsed):
        raise ValueError("auto_augment_policy needs at least one non-empty sub-policy")
    _check_ops([name for sub in parsed for name, _, _ in sub])
    return parsed


@keras.saving.register_keras_serializable(package="keras_insightface")
class FaceAugment(keras.layers.Layer):
    """The seed's face augmentations on the accelerator: (B, H, W, 3) 0..255 RGB -> float32 0..255, per sample.

    Order in training (identity cast otherwise): face-mask cutout, plain cutout, left-right flip (not with
    ``random_status=-1``, the seed's "no augmentation"), then
    ``random_status`` 1..3 (brightness ±12.75·L; contrast and saturation factors in 1±0.1·L; random
    crop of 100/112 of each side resized back), hue shift, RandAugment (``random_status >= 100``,
    magnitude ``5*random_status/100`` unless ``magnitude`` is given, ``num_layers`` ops each drawn
    uniformly from ``rand_augment_ops`` plus "no op", as TF-models) and AutoAugment (one sub-policy
    per sample; each of its ops applied with its probability). Levels 1..2 clip to 0..255 after each
    step (the seed clips once at the end, so saturation never sees out-of-range values here). Seed
    quirk kept: at magnitude 5 (``random_status=100``) the enhance ops' factor is exactly 1.0, so
    Color/Contrast/Brightness/Sharpness are no-ops (and are not computed); only AutoContrast, Equalize
    and Cutout act.

    ``random_cutout_mask_area``: probability of the seed's mask cutout: rows from a random height in
    ``[int(0.55*H), int(0.7*H))`` down to the bottom (mouth and chin) filled with 128.
    ``cutout_prob``/``cutout_size``: probability and side (fraction of the image side; the seed's
    40 px on 112) of a plain 128-filled square at a random centre. ``hue_delta``: HSV hue shift drawn
    in ±hue_delta (fraction of the hue circle; value and chroma kept, i.e. exact RGB->HSV->RGB as
    TF's ``adjust_hue``). One ``SeedGenerator(seed)`` drives every draw; inside a compiled step use the
    layer through a model or ``stateless_call``.

    Example:
        >>> import numpy as np
        >>> layer = FaceAugment(random_status=2, seed=0)
        >>> images = np.full((2, 16, 16, 3), 100, "uint8")
        >>> layer(images, training=True).shape
        (2, 16, 16, 3)
        >>> bool((layer(images) == 100).all())
        True
    """

    def __init__(
        self,
        random_status=0,
        rand_augment_ops=None,
        magnitude=None,
        num_layers=2,
        auto_augment_policy=None,
        hue_delta=0.0,
        cutout_prob=0.0,
        cutout_size=40 / 112,
        random_cutout_mask_area=0.0,
        translate_const=TRANSLATE_CONST,
        cutout_const=CUTOUT_CONST,
        seed=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.random_status = random_status
        self.rand_augment_ops = tuple(FACE_OPS if rand_augment_ops is None else rand_augment_ops)
        _check_ops(self.rand_augment_ops)
        self.magnitude = magnitude
        self.num_layers = num_layers
        self.policy = None if auto_augment_policy is None else _parse_policy(auto_augment_policy)
        named = auto_augment_policy is None or isinstance(auto_augment_policy, str)
        self.auto_augment_policy = auto_augment_policy if named else [list(map(list, sub)) for sub in self.policy]
        self.hue_delta = hue_delta
        self.cutout_prob = cutout_prob
        self.cutout_size = cutout_size
        self.random_cutout_mask_area = random_cutout_mask_area
        self.translate_const = translate_const
        self.cutout_const = cutout_const
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        images = ops.cast(images, "float32")
        if not training:
            return images
        batch, height, width = ops.shape(images)[:3]
        seed = self.seed_generator
        if self.random_cutout_mask_area > 0:
            start = keras.random.randint((batch,), int(height * 0.55), int(height * 0.7), seed=seed)
            masked = keras.random.uniform((batch,), seed=seed) < self.random_cutout_mask_area
            rows = ops.arange(height)[None, :, None, None] >= ops.reshape(start, (-1, 1, 1, 1))
            images = ops.where(rows & (_per_sample(masked) > 0), FILL_VALUE, images)
        if self.cutout_prob > 0:
            pad = ops.where(keras.random.uniform((batch,), seed=seed) < self.cutout_prob, self.cutout_size / 2, 0.0)
            center = _random_centers(batch, height, width, seed)
            images = _cutout(images, pad * min(height, width), center, FILL_VALUE)
        if self.random_status >= 0:  # the seed's -1: no augmentation, not even the flip
            images = _random_flip(images, seed)
        if 1 <= self.random_status < 100:
            images = _color_jitter(images, self.random_status, seed)
        if self.hue_delta > 0:
            images = _adjust_hue(images, keras.random.uniform((batch,), -self.hue_delta, self.hue_delta, seed=seed))
        if 3 <= self.random_status < 100:
            images = _crop_resize(images, seed)
        stage = dict(seed=seed, translate_const=self.translate_const, cutout_const=self.cutout_const)
        if self.random_status >= 100:
            magnitude = 5.0 * self.random_status / 100 if self.magnitude is None else self.magnitude
            choices = tuple((name, 1.0, magnitude) for name in self.rand_augment_ops) + (("Identity", 1.0, 0.0),)
            for _ in range(self.num_layers):
                choice = keras.random.randint((batch,), 0, len(choices), seed=seed)
                images = _apply_stage(images, choices, choice, **stage)
        if self.policy is not None:
            choice = keras.random.randint((batch,), 0, len(self.policy), seed=seed)
            for step in range(max(len(sub) for sub in self.policy)):
                choices = tuple(sub[step] if step < len(sub) else ("Identity", 0.0, 0.0) for sub in self.policy)
                images = _apply_stage(images, choices, choice, **stage)
        return ops.clip(images, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "random_status": self.random_status,
            "rand_augment_ops": list(self.rand_augment_ops),
            "magnitude": self.magnitude,
            "num_layers": self.num_layers,
            "auto_augment_policy": self.auto_augment_policy,
            "hue_delta": self.hue_delta,
            "cutout_prob": self.cutout_prob,
            "cutout_size": self.cutout_size,
            "random_cutout_mask_area": self.random_cutout_mask_area,
            "translate_const": self.translate_const,
            "cutout_const": self.cutout_const,
            "seed": self.seed,
        }


def show_batch_sample(images, path, augment=None, columns=8, seed=0):
    """Write a PNG grid of ``augment(images, training=True)`` so the augmentation can be eyeballed before training.

    ``images`` is a uint8 (B, H, W, 3) numpy batch; ``augment`` a ``FaceAugment`` (default: flip only,
    ``FaceAugment(seed=seed)``). Tiles are written at their pixel size with ``matplotlib.image.imsave``
    (no pyplot, no GUI backend). Returns ``path``.

    Example:
        >>> import numpy as np, tempfile, os
        >>> out = show_batch_sample(np.zeros((3, 8, 8, 3), "uint8"), os.path.join(tempfile.mkdtemp(), "s.png"))
        >>> os.path.getsize(out) > 0
        True
    """
    from matplotlib import image as mpimg

    augment = FaceAugment(seed=seed) if augment is None else augment
    tiles = np.clip(np.asarray(ops.convert_to_numpy(augment(images, training=True))), 0, 255).astype("uint8")
    count, height, width, channels = tiles.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    blank = np.full((rows * columns - count, height, width, channels), 255, "uint8")
    grid = np.concatenate([tiles, blank]).reshape(rows, columns, height, width, channels)
    mpimg.imsave(path, grid.transpose(0, 2, 1, 3, 4).reshape(rows * height, columns * width, channels))
    return path

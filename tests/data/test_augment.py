"""FaceAugment levels, the RandAugment/AutoAugment ops (against PIL where it has them), mixup, the sample grid."""

import jax
import keras
import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from keras_insightface.data.augment import FaceAugment, apply_op, show_batch_sample
from keras_insightface.data.mixup import mixup


def np_(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def random_images(count, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3)).astype("uint8")


def chroma(images):
    return images.max(-1) - images.min(-1)


def test_identity_when_not_training():
    images = random_images(2)
    layer = FaceAugment(random_status=100, auto_augment_policy="face", hue_delta=0.1, seed=0)
    for training in (None, False):
        out = np_(layer(images, training=training))
        assert out.dtype == np.float32 and np.array_equal(out, images)


def test_level0_only_flips_and_both_happen():
    images = random_images(16)
    out = np_(FaceAugment(random_status=0, seed=1)(images, training=True))
    same = [np.array_equal(o, i) for o, i in zip(out, images)]
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert any(same) and any(mirrored)


def test_level1_brightness_is_per_sample_and_clipped():
    out = np_(FaceAugment(random_status=1, seed=0)(np.full((8, 8, 8, 3), 100, "uint8"), training=True))
    deltas = out.reshape(8, -1).mean(1) - 100
    assert np.allclose(out, out[:, :1, :1, :1]) and np.all(np.abs(deltas) <= 12.75)
    assert len(np.unique(np.round(deltas, 4))) == 8
    half = np.zeros((8, 8, 8, 3), "uint8")
    half[:, :, 4:] = 255
    out = np_(FaceAugment(random_status=1, seed=0)(half, training=True))
    assert out.min() >= 0 and out.max() <= 255
    dark, bright = out[:, :, :, :].min(axis=(1, 2, 3)), out.max(axis=(1, 2, 3))
    assert (dark == 0).any() and (bright == 255).any()  # positive deltas clip at 255, negative at 0


def test_level2_contrast_and_saturation_factors_within_bounds():
    layer = FaceAugment(random_status=2, seed=3)
    grey_ramp = np.repeat(np.tile(np.linspace(100, 150, 16)[None, :, None], (16, 1, 3))[None], 8, 0).astype("uint8")
    out = np_(layer(grey_ramp, training=True))
    ratio = out.reshape(8, -1).std(1) / grey_ramp.reshape(8, -1).std(1)
    assert np.all((ratio > 0.8 - 1e-4) & (ratio < 1.2 + 1e-4)) and ratio.std() > 0
    assert np.allclose(chroma(out), 0)  # saturation cannot colour grey
    colour = np.broadcast_to(np.array([150, 100, 80], "uint8"), (8, 4, 4, 3))
    out = np_(layer(colour, training=True))
    ratio = chroma(out).mean((1, 2)) / 70
    assert np.all((ratio > 0.8 - 1e-4) & (ratio < 1.2 + 1e-4)) and ratio.std() > 0


def test_level3_crop_resize_keeps_shape():
    ramp = np.broadcast_to(np.arange(112, dtype="uint8")[None, None, :, None] * 2, (4, 112, 112, 3))
    out = np_(FaceAugment(random_status=3, seed=0)(ramp, training=True))
    assert out.shape == ramp.shape and out.min() >= 0 and out.max() <= 255
    assert not np.allclose(out, ramp) and not np.allclose(out, ramp[:, :, ::-1])


def test_same_seed_reproduces_other_seed_differs():
    images = random_images(4)
    kwargs = dict(random_status=100, hue_delta=0.05, cutout_prob=0.5, random_cutout_mask_area=0.5)
    first, second, other = (np_(FaceAugment(seed=s, **kwargs)(images, training=True)) for s in (7, 7, 8))
    assert np.array_equal(first, second) and not np.array_equal(first, other)


def test_mask_area_fills_bottom_rows():
    images = np.full((8, 20, 20, 3), 200, "uint8")
    out = np_(FaceAugment(random_cutout_mask_area=1.0, seed=0)(images, training=True))
    starts = (out[..., 0] == 128).all(axis=2).argmax(axis=1)
    for o, start in zip(out, starts):
        assert 11 <= start < 14 and (o[start:] == 128).all() and (o[:start] == 200).all()


def test_hue_shift_keeps_value_and_chroma_and_rotates():
    colour = np.broadcast_to(np.array([200, 50, 50], "uint8"), (8, 2, 2, 3))
    out = np_(FaceAugment(hue_delta=0.1, seed=0)(colour, training=True))
    assert np.allclose(out.max(-1), 200, atol=1e-3) and np.allclose(chroma(out), 150, atol=1e-3)
    assert len(np.unique(np.round(out[:, 0, 0], 3), axis=0)) == 8


def test_autocontrast_stretches_ramp():
    ramp = np.tile(np.linspace(50, 150, 16)[None, None, :, None], (1, 4, 1, 3))
    out = np_(apply_op(ramp, "AutoContrast", 0))
    assert np.allclose(out[0, 0, :, 0], np.linspace(0, 255, 16), atol=1e-3)
    assert np.array_equal(np_(apply_op(np.full((1, 4, 4, 3), 90.0), "AutoContrast", 0)), np.full((1, 4, 4, 3), 90.0))


def test_equalize_flattens_histogram_as_pil():
    four = np.repeat([10, 20, 30, 40], 256).reshape(1, 32, 32, 1).repeat(3, -1).astype("uint8")
    out = np_(apply_op(four, "Equalize", 0))
    values, counts = np.unique(out[..., 0], return_counts=True)
    assert values.min() == 0 and values.max() >= 190 and np.all(np.diff(values) > 60) and len(set(counts)) == 1
    skewed = np.random.default_rng(0).normal(90, 15, (2, 12, 12, 3)).clip(0, 255).astype("uint8")
    expected = np.stack([np.asarray(ImageOps.equalize(Image.fromarray(i))) for i in skewed])
    assert np.array_equal(np_(apply_op(skewed, "Equalize", 0)), expected)


def test_solarize_posterize_invert():
    values = np.arange(256, dtype="float32").reshape(1, 16, 16, 1).repeat(3, -1)
    solarized = np_(apply_op(values, "Solarize", 5))  # threshold int(0.5 * 256) = 128
    assert np.array_equal(solarized, np.where(values < 128, values, 255 - values))
    posterized = np_(apply_op(values, "Posterize", 10))  # int(4.0) = 4 bits kept
    assert np.array_equal(posterized, (values.astype(int) & 0xF0).astype("float32"))
    assert np.array_equal(np_(apply_op(values, "Invert", 0)), 255 - values)


def test_rotate_90_transposes_ramp_and_translate_fills():
    rows = np.broadcast_to(np.arange(16, dtype="float32")[None, :, None, None], (1, 16, 16, 3))
    rotated = np_(apply_op(rows, "Rotate", 30))  # 30 / 10 * 30 = 90 degrees
    assert np.array_equal(rotated[0, ..., 0], rows[0, ..., 0].T)
    cols = np.ascontiguousarray(rows.transpose(0, 2, 1, 3))
    shifted = np_(apply_op(cols, "TranslateX", 10, translate_const=0.25))  # 4 px
    assert np.array_equal(shifted[0, :, :12], cols[0, :, 4:]) and (shifted[0, :, 12:] == 128).all()
    sheared = np_(apply_op(cols, "ShearY", 5, sign=-1.0))
    assert sheared.shape == cols.shape and not np.array_equal(sheared, cols)


def test_cutout_fills_square():
    images = np.full((2, 28, 28, 3), 200.0, "float32")
    out = np_(apply_op(images, "Cutout", 5, center=np.array([[10, 10], [0, 27]])))  # half side int(0.5*40/112*28)=5
    assert (out[0, 5:15, 5:15] == 128).all() and (out[0] == 128).sum() == 10 * 10 * 3
    assert (out[1, :5, 22:] == 128).all() and (out[1] == 128).sum() == 5 * 6 * 3


@pytest.mark.parametrize(
    "name,level,pil",
    [
        ("Color", 3, lambda im: ImageEnhance.Color(im).enhance(0.64)),
        ("Contrast", 8, lambda im: ImageEnhance.Contrast(im).enhance(1.54)),
        ("Brightness", 2, lambda im: ImageEnhance.Brightness(im).enhance(0.46)),
        ("Sharpness", 9, lambda im: ImageEnhance.Sharpness(im).enhance(1.72)),
    ],
)
def test_enhance_ops_match_pil(name, level, pil):
    images = np.random.default_rng(1).normal(110, 30, (2, 12, 14, 3)).clip(0, 255).astype("uint8")
    expected = np.stack([np.asarray(pil(Image.fromarray(i))) for i in images]).astype("float32")
    assert np.abs(np_(apply_op(images, name, level)) - expected).max() <= 1.5  # PIL rounds to uint8


def test_color_factor_zero_is_grey():
    level = (0.0 - 0.1) / 1.8 * 10  # enhance factor level/10*1.8+0.1 == 0
    out = np_(apply_op(random_images(2), "Color", level))
    assert np.allclose(chroma(out), 0, atol=1e-3)


def test_policies_run_and_pick_per_sample():
    same = np.repeat(random_images(1, seed=3), 8, 0)
    for kwargs in (dict(auto_augment_policy="face"), dict(random_status=200)):
        out = np_(FaceAugment(seed=0, **kwargs)(same, training=True))
        assert out.shape == same.shape and len(np.unique(out.reshape(8, -1), axis=0)) > 2
    policy = [[("Solarize", 1.0, 5)], [("Invert", 1.0, 0), ("Identity", 0.5, 0)]]
    custom = FaceAugment(auto_augment_policy=policy, seed=0)
    out = np_(custom(np.full((8, 4, 4, 3), 200, "uint8"), training=True))
    assert set(np.unique(out)) == {55.0}  # both sub-policies map 200 to 55
    with pytest.raises(ValueError):
        FaceAugment(auto_augment_policy=[[("Blur", 1.0, 5)]])
    with pytest.raises(ValueError):
        FaceAugment(auto_augment_policy="v9")


def test_config_round_trip():
    layer = FaceAugment(random_status=100, auto_augment_policy=[[("Equalize", 0.5, 1)]], hue_delta=0.02, seed=4)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(clone, FaceAugment) and clone.get_config() == layer.get_config()


def test_runs_compiled_and_advances_seed():
    layer = FaceAugment(random_status=2, seed=0)
    layer.build((2, 8, 8, 3))
    step = jax.jit(lambda state, x: layer.stateless_call([], state, x, training=True))
    state = [v.value for v in layer.non_trainable_variables]
    images = np.full((2, 8, 8, 3), 100, "uint8")
    first, state = step(state, images)
    second, _ = step(state, images)
    assert first.shape == (2, 8, 8, 3) and not np.allclose(first, second)


@pytest.mark.parametrize("alpha", [0.4, 1.0])
def test_mixup_convex_with_partner(alpha):
    images = random_images(16).astype("float32")
    mixed, labels = (np_(t) for t in mixup(images, np.eye(16), alpha, keras.random.SeedGenerator(5)))
    assert np.allclose(labels.sum(1), 1.0)
    own = np.diag(labels)
    assert np.all(own >= 0.5 - 1e-6) and np.all((own <= 0.9 + 1e-6) | (own == 1.0))
    assert (own < 1).any()
    for b in range(16):
        partner = np.argmax(np.where(np.arange(16) == b, -1.0, labels[b])) if own[b] < 1 else b
        assert np.allclose(mixed[b], own[b] * images[b] + (1 - own[b]) * images[partner], atol=1e-3)


def test_show_batch_sample_writes_png(tmp_path):
    augment = FaceAugment(random_status=1, seed=0)
    path = show_batch_sample(random_images(5, size=8), tmp_path / "sample.png", augment, columns=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib import image as mpimg

    assert mpimg.imread(path).shape[:2] == (16, 32)

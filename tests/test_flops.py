"""GFLOPs as the field counts them: multiply-accumulates of a small model against a hand count and PyTorch's own
counter, IR-ResNet / MobileFaceNet against insightface's published figures, and the XLA convention kept apart."""

import keras
import numpy as np
import pytest

from keras_insightface.flops import gflops, multiply_accumulates, xla_flops
from keras_insightface.models import buildin_models

# 16x16x3 input; every count is output values x (kernel taps x input channels per group) or, for a matrix
# product, output values x the contracted length
STEM = 8 * 8 * 8 * (3 * 3 * 3)  # 3x3 stride-2 conv to 8 channels, "same" padding: 8x8x8
GROUPED = 8 * 8 * 8 * (3 * 3 * 8 // 2)  # 3x3 conv, 8 -> 8 in 2 groups
DEPTHWISE = 8 * 8 * 16 * (3 * 3)  # 3x3 depthwise, multiplier 2
TOKENS, WIDTH, HEADS, KEY = 64, 16, 2, 4  # the 8x8x16 map as 64 tokens of 16, self-attention of 2 heads of 4
ATTENTION = 3 * TOKENS * WIDTH * HEADS * KEY + 2 * HEADS * TOKENS * TOKENS * KEY + TOKENS * HEADS * KEY * WIDTH
DENSE = TOKENS * WIDTH * 10
HAND_COUNT = STEM + GROUPED + DEPTHWISE + ATTENTION + DENSE


def tiny_model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(8, 3, padding="same", groups=2, use_bias=False)(x))
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu")(x)
    tokens = keras.layers.Reshape((TOKENS, WIDTH))(x)
    x = keras.layers.MultiHeadAttention(HEADS, KEY)(tokens, tokens)
    return keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(x)))


def test_multiply_accumulates_of_a_small_model_by_hand():
    model = tiny_model()
    assert multiply_accumulates(model) == HAND_COUNT == 150016
    assert multiply_accumulates(model, batch_size=3) == 3 * HAND_COUNT
    assert gflops(model) == pytest.approx(HAND_COUNT / 1e9, rel=1e-12)
    assert gflops(model, convention="flops") == xla_flops(model) / 1e9
    with pytest.raises(ValueError, match="convention must be one of"):
        gflops(model, convention="gmacs")
    with pytest.raises(ValueError, match="batch_size must be positive"):
        multiply_accumulates(model, batch_size=0)


def test_xla_count_is_two_per_multiply_add_on_the_image_only():
    """XLA's convention: a multiply-add is two FLOPs and taps on the zero padding are not counted."""
    inputs = keras.Input((8, 8, 3))
    # taps landing on the image: 3 x 3 per position without padding; with it, (3 x 8 - 2) per axis
    for padding, image_taps in (("valid", 6 * 6 * 3 * 3), ("same", (3 * 8 - 2) ** 2)):
        model = keras.Model(inputs, keras.layers.Conv2D(4, 3, padding=padding, use_bias=False)(inputs))
        positions = 6 * 6 if padding == "valid" else 8 * 8
        assert multiply_accumulates(model) == positions * 3 * 3 * 3 * 4
        assert xla_flops(model) == 2 * image_taps * 3 * 4


def test_same_count_as_pytorchs_flop_counter():
    """The same network written in PyTorch, counted by torch.utils.flop_counter (two FLOPs per multiply-add)."""
    torch = pytest.importorskip("torch", reason="PyTorch (the compat extra) is the independent reference")
    from torch.utils.flop_counter import FlopCounterMode

    conv = torch.nn.functional.conv2d
    generator = torch.Generator().manual_seed(0)

    def weight(*shape):
        return torch.randn(*shape, generator=generator)

    def forward(images):
        x = conv(images, weight(8, 3, 3, 3), weight(8), stride=2, padding=1)
        x = conv(x, weight(8, 4, 3, 3), padding=1, groups=2)
        x = torch.relu(conv(x, weight(16, 1, 3, 3), padding=1, groups=8))
        tokens = x.flatten(2).transpose(1, 2)  # (1, 64, 16)
        q, k, v = (
            (tokens @ weight(WIDTH, HEADS * KEY)).reshape(1, TOKENS, HEADS, KEY).transpose(1, 2) for _ in range(3)
        )
        scores = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
        x = (scores @ v).transpose(1, 2).reshape(1, TOKENS, HEADS * KEY) @ weight(HEADS * KEY, WIDTH)
        return torch.nn.functional.linear(x.flatten(1), weight(10, TOKENS * WIDTH), weight(10))

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        forward(torch.zeros(1, 3, 16, 16))
    assert counter.get_total_flops() == 2 * multiply_accumulates(tiny_model())


class Repeat(keras.layers.Layer):
    """A dense product repeated ``times`` in a counted loop (``fori_loop``) or an open one (``while_loop``)."""

    def __init__(self, times, counted, **kwargs):
        super().__init__(**kwargs)
        self.times, self.counted = times, counted

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], input_shape[-1]))

    def call(self, x):
        if self.counted:
            return keras.ops.fori_loop(0, self.times, lambda _, y: keras.ops.matmul(y, self.kernel), x)
        return keras.ops.while_loop(
            lambda i, _: i < self.times, lambda i, y: (i + 1, keras.ops.matmul(y, self.kernel)), (0, x)
        )[1]


def test_loops():
    inputs = keras.Input((6,))
    assert multiply_accumulates(keras.Model(inputs, Repeat(4, counted=True)(inputs))) == 4 * 6 * 6
    with pytest.raises(ValueError, match="cannot count multiply-accumulates: a while loop .* trip count is unknown"):
        multiply_accumulates(keras.Model(inputs, Repeat(4, counted=False)(inputs)))


# insightface recognition/arcface_torch/README.md, table "3. ViT For Face Recognition", FLOPs column (GFLOPs as
# its flops.py prints them: ptflops multiply-accumulates), rounded to 0.1: r50 6.3, r100 12.1. Exact counts of
# convolutions and matrix products measured on arcface_torch's own iresnet50 / iresnet100 (insightface
# 7fadd420, backbones/iresnet.py, input 1x3x112x112) with torch.utils.flop_counter.FlopCounterMode / 2; its
# head is our "E" (BN, dropout, flatten, fc 25088 -> 512, BN). ptflops 0.7.5, as flops.py calls it, gives
# 6,333,667,840 and 12,127,590,912 (+0.4%: one per element of every BN, two when affine, and PReLU).
PUBLISHED_IRESNET = {"r50": (6.3, 6_309_330_944), "r100": (12.1, 12_089_606_144)}


@pytest.mark.parametrize("name", sorted(PUBLISHED_IRESNET))
def test_iresnet_against_arcface_torch(name):
    published, measured = PUBLISHED_IRESNET[name]
    model = buildin_models(name, output_layer="E", weights=None, preset="arcface_torch")
    macs = multiply_accumulates(model)
    assert macs == measured
    assert abs(gflops(model) - published) <= 0.05  # the README's rounding


def test_mobilefacenets_against_published_figures():
    # arcface_torch's mbf (get_mbf: scale 2, blocks 1, 4, 6, 2; our "mbf"), "mobilefacenet-0.45G" in
    # recognition/arcface_torch/README.md (table 1); its convolutions and fc measured as for the IR-ResNets:
    # 437,520,896. ptflops 0.7.5 gives 451,948,544: its BN and PReLU terms make up the 3% between our 0.4375
    # and the published 0.45.
    mbf = multiply_accumulates(buildin_models("mbf", weights=None, preset="arcface_torch"))
    assert mbf == 437_520_896 and mbf / 1e9 == pytest.approx(0.45, rel=0.03)
    # Our mobilefacenet_insightface is the paper's / insightface model-zoo MobileFaceNet (MXNet, 128-d
    # embedding). openvinotoolkit/open_model_zoo models/public/face-recognition-mobilefacenet-arcface: 0.449
    # GFLOPs, 0.993 M parameters; OpenVINO counts a multiply-add as two (its resnet-50-pytorch card: 8.216 for
    # torchvision's 4.09 G multiply-accumulates), and its BN and PReLU work, 1.6% here, on top.
    model = buildin_models("mobilefacenet_insightface", emb_shape=128, weights=None, preset="arcface_torch")
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) / 1e6 == pytest.approx(0.993, rel=0.015)
    assert 2 * gflops(model) == pytest.approx(0.449, rel=0.02)

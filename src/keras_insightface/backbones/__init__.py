"""Backbones by name: each entry applies a backbone to an input tensor and returns its last feature map.

Example:
    >>> from keras_insightface.backbones import get_backbone, list_backbones
    >>> "r50" in list_backbones()
    True
"""

import difflib
import functools
import types

from keras_insightface.backbones.botnet import botnet
from keras_insightface.backbones.applications import keras_application
from keras_insightface.backbones.efficientnet import efficientnet_v1, efficientnet_v2
from keras_insightface.backbones.efficientnet_extra import efficientnet_extra
from keras_insightface.backbones.ghostnet import ghostnet
from keras_insightface.backbones.iresnet import iresnet
from keras_insightface.backbones.mbf import mbf
from keras_insightface.backbones.mobilefacenet import mobilefacenet
from keras_insightface.backbones.mobilenet import mobilenet, mobilenet_v1, mobilenet_v2, mobilenet_v3
from keras_insightface.backbones.resnetv2 import resnet_v2
from keras_insightface.backbones.se_resnext import se_resnext
from keras_insightface.backbones.seed_mobilefacenet import seed_mobilefacenet
from keras_insightface.backbones.seed_vargface import seed_vargface
from keras_insightface.backbones.vargface import vargfacenet
from keras_insightface.backbones.vit import vit_b, vit_s, vit_t

BACKBONES = types.MappingProxyType(
    {
        "r18": functools.partial(iresnet, depth=18),
        "r34": functools.partial(iresnet, depth=34),
        "r50": functools.partial(iresnet, depth=50),
        "r100": functools.partial(iresnet, depth=100),
        "r101": functools.partial(iresnet, depth=101),
        "r200": functools.partial(iresnet, depth=200),
        **{f"se_r{depth}": functools.partial(iresnet, depth=depth, use_se=True) for depth in (18, 34, 50, 100, 101)},
        # CPU-sized r18 for the demo and the tests: 1/8 width (8/16/32/64 channels) and a stride-2 stem,
        # about 1/250 of r18's compute; not a recognition model for real faces.
        "r18_tiny": functools.partial(iresnet, depth=18, width=8, stem_strides=2),
        "mobilenet": mobilenet,  # keras.applications.MobileNet, as the seed
        "mobilenet_m1": functools.partial(mobilenet_v1, stem_strides=1),
        "mobilenetv2": mobilenet_v2,
        "mobilenetv3_small": functools.partial(mobilenet_v3, size="small"),
        "mobilenetv3_large": functools.partial(mobilenet_v3, size="large"),
        **{f"efficientnetv2{v}": functools.partial(efficientnet_v2, variant=v) for v in ("b0", "b1", "b2", "b3", "s")},
        **{f"efficientnetv2{v}": functools.partial(efficientnet_v2, variant=v) for v in ("m", "l")},
        **{f"efficientnetb{i}": functools.partial(efficientnet_v1, variant=f"b{i}") for i in range(8)},
        # the keras_efficientnet_v2 package's models that keras.applications lacks (the seed's names)
        "efficientnetv2t": functools.partial(efficientnet_extra, variant="v2t"),
        "efficientnetv2xl": functools.partial(efficientnet_extra, variant="v2xl"),
        "efficientnetl2": functools.partial(efficientnet_extra, variant="v1l2"),
        # keras.applications' ResNet50 / 101 / 152 (v1), as the seed's "resnet50"...; any other keras.applications
        # model is found by name in buildin_models (DenseNet121, InceptionV3, ...)
        **{f"resnet{depth}": functools.partial(keras_application, model_name=f"ResNet{depth}") for depth in (50, 101, 152)},
        # keras.applications' ResNetV2 layout; the seed's variants are keyword options
        # (buildin_models("resnet101v2", first_conv_k3_stride_1=True, pad_same=True, conv_no_bias=True)).
        **{f"resnet{depth}v2": functools.partial(resnet_v2, depth=depth) for depth in (50, 101, 152)},
        **{f"botnet{depth}": functools.partial(botnet, depth=depth) for depth in (50, 101, 152)},
        # titu1994's SEResNextImageNet, as the seed; "se_resnext" is the seed's name for the 50-layer one
        "se_resnext": functools.partial(se_resnext, depth=(3, 4, 6, 3)),
        "se_resnext50": functools.partial(se_resnext, depth=(3, 4, 6, 3)),
        "se_resnext101": functools.partial(se_resnext, depth=(3, 4, 23, 3)),
        "vargfacenet": vargfacenet,
        # the seed's MobileFaceNet and VarGFaceNet (layer names as the seed's, so seed .h5 weights load by name);
        # the paper / insightface MobileFaceNet keeps its own names
        "mobilefacenet": seed_mobilefacenet,
        "se_mobilefacenet": functools.partial(seed_mobilefacenet, use_se=True),
        "mobilefacenet_insightface": mobilefacenet,
        "se_mobilefacenet_insightface": functools.partial(mobilefacenet, use_se=True),
        # arcface_torch's get_mbf (width = its scale, 2 by default), the model zoo's 0.45 GFLOPs mbf
        "mbf": mbf,
        "vargface": seed_vargface,
        "ghostnet": ghostnet,
        "vit_t": vit_t,
        "vit_s": vit_s,
        "vit_b": vit_b,
    }
)


def list_backbones():
    """Names accepted by ``buildin_models``."""
    return sorted(BACKBONES)


def get_backbone(name):
    """The backbone builder registered as ``name`` (case-insensitive; an unknown name gets the closest ones)."""
    key = name.lower()
    if key not in BACKBONES:
        close = difflib.get_close_matches(key, list(BACKBONES), n=3)
        hint = f" (did you mean {', '.join(repr(match) for match in close)}?)" if close else ""
        raise ValueError(f"Unknown backbone {name!r}{hint}; available: {', '.join(list_backbones())}")
    return BACKBONES[key]

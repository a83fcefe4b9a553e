"""Import insightface's released weights into this project's models: arcface_torch ``.pth`` state dicts and
model-zoo ONNX files (``w600k_r50.onnx``, ``glint360k_r100.onnx``, ...) become a ``.keras`` basic model.

arcface_torch's networks (``recognition/arcface_torch/backbones``) and the models they land in here:
    - ``iresnet18/34/50/100/200`` (``r18`` ... ``r200``): ``buildin_models("r50", preset="arcface_torch",
      output_layer="E", use_bias=True, scale=False, dropout=0)``. Same layers in the same order: 3x3 stem conv,
      BN, PReLU; pre-BN ``IBasicBlock`` s (BN, conv3x3, BN, PReLU, conv3x3 with the stride, BN; 1x1 conv + BN
      shortcut on each stage's first block); then ``bn2`` (``E_batchnorm``), flatten, dropout, ``fc`` with bias
      (``E_dense``), and ``features``, a BatchNorm1d whose weight arcface_torch fixes at 1 (``pre_embedding``
      without gamma). Every BN has epsilon 1e-5 and momentum 0.1 in PyTorch's sense (0.9 here).
    - ``mbf`` (``get_mbf``, any ``scale`` and ``blocks``; the default ``scale=2, blocks=(1, 4, 6, 2)`` and
      ``scale=1``, the paper's widths, alike): ``buildin_models("mbf", width=scale, blocks=blocks,
      output_layer="GDC", use_bias=False, scale=True, dropout=0)``, both read from the file. ``layers.0`` /
      ``layers.1`` are ``stem_*`` / ``stem_group_*`` (or ``stem_block<i>_*``), ``layers.2`` ... ``layers.7``
      ``stack<k>_block<i>_*``, ``conv_sep`` is ``pointwise_*``, and the ``GDC`` block (7x7 depthwise conv + BN,
      flatten, bias-free linear, BatchNorm1d) is the GDC head.
The ``fp16`` flag of arcface_torch changes only the arithmetic (autocast); float16 or bfloat16 weights are read
and cast to float32.

Three differences are absorbed so that the Keras model computes the source's embeddings:
    - input normalisation: arcface_torch feeds ``(x / 255 - 0.5) / 0.5 = (x - 127.5) / 127.5`` (RGB), the
      model zoo's ONNX files expect the same, and our models have ``(x - 127.5) / 128`` inside. The stem conv's
      kernel is multiplied by ``128 / 127.5`` (exact, zero padding included), so the saved model keeps our
      ``normalize`` layer and loads by name into ``buildin_models`` models (``Train(pretrained=...)``);
    - layouts: conv kernels ``(out, in, kh, kw)`` -> ``(kh, kw, in, out)``, depthwise ``(C, 1, kh, kw)`` ->
      ``(kh, kw, C, 1)``, PReLU ``(C,)`` -> ``(1, 1, C)``, and ``fc`` flattens NCHW in PyTorch, NHWC here, so
      its rows are permuted;
    - ONNX exports fold most BatchNorms into the conv before them (a conv with a bias, no BN node): that BN
      becomes the identity with the conv's bias as its shift; a BN that is still there is copied, epsilon
      included.

Example:
    >>> model = import_arcface_torch("ms1mv3_arcface_r50_fp16/backbone.pth")          # doctest: +SKIP
    >>> model = import_onnx("buffalo_l/w600k_r50.onnx")                               # doctest: +SKIP
    >>> convert_insightface("w600k_r50.onnx", "w600k_r50_basic.keras", kind="onnx")    # doctest: +SKIP
"""

import collections
import re

import numpy as np

from keras_insightface.backbones.iresnet import BLOCKS
from keras_insightface.errors import DataError
from keras_insightface.inference.onnx_weights import read_onnx_weights
from keras_insightface.inference.torch_pth import load_state_dict
from keras_insightface.saving import save_model

IRESNETS = ("r18", "r34", "r50", "r100", "r200")
ARCHS = (*IRESNETS, "mbf")
MBF_WIDTH, MBF_BLOCKS = 2, (1, 4, 6, 2)  # arcface_torch's get_mbf defaults (scale, blocks)
MBF_STEM = 64  # channels of mbf's stem per unit of scale
SOURCE_MEAN, SOURCE_STD = 127.5, 127.5  # arcface_torch's (x / 255 - 0.5) / 0.5, the model zoo's input_mean/std
OUR_STD = 128.0  # buildin_models' normalize layer: (x - 127.5) / 128
STEM_LAYER = "stem_conv"

# One parametrised layer of the source in PyTorch's order: the Keras layer, what it is, the torch module path.
Slot = collections.namedtuple("Slot", "layer kind source")


def _iresnet_slots(depth):
    slots = [Slot("stem_conv", "conv", "conv1"), Slot("stem_bn", "bn", "bn1"), Slot("stem_prelu", "prelu", "prelu")]
    for stage, num_blocks in enumerate(BLOCKS[depth]):
        for block in range(num_blocks):
            ours, theirs = f"stack{stage + 1}_block{block + 1}", f"layer{stage + 1}.{block}"
            slots += [
                Slot(f"{ours}_1_bn", "bn", f"{theirs}.bn1"), Slot(f"{ours}_1_conv", "conv", f"{theirs}.conv1"),
                Slot(f"{ours}_2_bn", "bn", f"{theirs}.bn2"), Slot(f"{ours}_2_prelu", "prelu", f"{theirs}.prelu"),
                Slot(f"{ours}_2_conv", "conv", f"{theirs}.conv2"), Slot(f"{ours}_3_bn", "bn", f"{theirs}.bn3"),
            ]
            if block == 0:  # every stage starts with stride 2: a 1x1 conv + BN shortcut
                slots += [Slot(f"{ours}_shortcut_conv", "conv", f"{theirs}.downsample.0"),
                          Slot(f"{ours}_shortcut_bn", "bn", f"{theirs}.downsample.1")]
    return slots + [Slot("E_batchnorm", "bn", "bn2"), Slot("E_dense", "dense", "fc"),
                    Slot("pre_embedding", "bn", "features")]


def _conv_block(ours, theirs, activation=True):
    """arcface_torch's ConvBlock (conv, BN, PReLU) / LinearBlock (conv, BN) at module path ``theirs``."""
    slots = [Slot(f"{ours}_conv", "conv", f"{theirs}.layers.0"), Slot(f"{ours}_bn", "bn", f"{theirs}.layers.1")]
    return slots + ([Slot(f"{ours}_prelu", "prelu", f"{theirs}.layers.2")] if activation else [])


def _bottleneck(ours, theirs):
    """arcface_torch's DepthWise: 1x1 expand ConvBlock, depthwise ConvBlock, 1x1 project LinearBlock."""
    return (_conv_block(f"{ours}_expand", f"{theirs}.layers.0") + _conv_block(f"{ours}_dw", f"{theirs}.layers.1")
            + _conv_block(f"{ours}_project", f"{theirs}.layers.2", activation=False))


def _mbf_slots(blocks):
    """arcface_torch ``MobileFaceNet(blocks=blocks)`` on the ``mbf`` backbone's names: ``layers.1`` is one
    grouped ConvBlock when ``blocks[0] == 1``, else a residual run; ``layers.2`` / ``.4`` / ``.6`` are stride-2
    bottlenecks, ``layers.3`` / ``.5`` / ``.7`` residual runs of ``blocks[1]`` / ``[2]`` / ``[3]``."""
    slots = _conv_block("stem", "layers.0")
    if blocks[0] == 1:
        slots += _conv_block("stem_group", "layers.1")
    else:
        slots += [slot for i in range(blocks[0]) for slot in _bottleneck(f"stem_block{i + 1}", f"layers.1.layers.{i}")]
    for stage, count in enumerate(blocks[1:], 1):
        slots += _bottleneck(f"stack{stage}_block1", f"layers.{2 * stage}")
        for i in range(count):
            slots += _bottleneck(f"stack{stage}_block{i + 2}", f"layers.{2 * stage + 1}.layers.{i}")
    return slots + _conv_block("pointwise", "conv_sep") + [
        Slot("GDC_dw", "conv", "features.layers.0.layers.0"), Slot("GDC_batchnorm", "bn", "features.layers.0.layers.1"),
        Slot("GDC_conv", "dense", "features.layers.2"), Slot("pre_embedding", "bn", "features.layers.3"),
    ]


def arcface_torch_slots(arch, blocks=MBF_BLOCKS):
    """The parametrised layers of arcface_torch's ``arch`` in PyTorch's order, each with our layer's name
    (``blocks``: an ``mbf``'s)."""
    if arch == "mbf":
        return _mbf_slots(tuple(blocks))
    if arch not in IRESNETS:
        raise ValueError(f"arch must be one of {ARCHS}, received arch={arch!r}")
    return _iresnet_slots(int(arch[1:]))


def arcface_torch_model(arch, emb_shape=512, width=MBF_WIDTH, blocks=MBF_BLOCKS):
    """Our basic model laid out as arcface_torch's ``arch`` (random weights), input 112x112 RGB 0..255;
    ``width`` / ``blocks``: an ``mbf``'s ``scale`` / ``blocks``."""
    from keras_insightface.models import buildin_models

    common = dict(emb_shape=emb_shape, dropout=0, weights=None, bn_momentum=0.9, bn_epsilon=1e-5)
    if arch == "mbf":
        return buildin_models("mbf", output_layer="GDC", use_bias=False, scale=True, width=width,
                              blocks=tuple(blocks), **common)
    if arch not in IRESNETS:
        raise ValueError(f"arch must be one of {ARCHS}, received arch={arch!r}")
    return buildin_models(arch, output_layer="E", use_bias=True, scale=False, preset="arcface_torch", **common)


# ---- from source arrays (PyTorch layouts) to one Keras layer's weight list ----

def _layer_kind(layer):
    return type(layer).__name__


def _conv_kernel(weight, layer, where):
    weight = np.asarray(weight, np.float32)
    if weight.ndim != 4:
        raise DataError(f"{where}: a conv weight of shape {weight.shape}, expected 4 dimensions")
    if _layer_kind(layer) == "DepthwiseConv2D":
        return weight.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    return weight.transpose(2, 3, 1, 0)  # (out, in / groups, kh, kw) -> (kh, kw, in / groups, out)


def _dense_kernel(weight, layer, model, where):
    """PyTorch's ``(out, in)`` linear weight as the kernel of ``layer`` (a Dense, or a 1x1 Conv2D on a 1x1 map);
    a Dense after a flatten of an ``(H, W, C)`` map gets its rows from PyTorch's NCHW flatten order."""
    weight = np.asarray(weight, np.float32)
    if weight.ndim != 2:
        raise DataError(f"{where}: a linear weight of shape {weight.shape}, expected 2 dimensions")
    out_features, in_features = weight.shape
    if _layer_kind(layer) == "Conv2D":
        return weight.T.reshape(1, 1, in_features, out_features)
    flattens = [other for other in model.layers if _layer_kind(other) == "Flatten" and other.output is layer.input]
    source = flattens[0].input.shape[1:] if flattens else ()
    if len(source) == 3 and source[0] * source[1] > 1 and int(np.prod(source)) == in_features:
        height, width, channels = source
        return weight.reshape(out_features, channels, height, width).transpose(2, 3, 1, 0).reshape(
            in_features, out_features)
    return weight.T


def _check_shapes(layer, arrays, where):
    expected = [tuple(w.shape) for w in layer.weights]
    got = [tuple(a.shape) for a in arrays]
    if got != expected:
        raise DataError(f"{where}: shapes {got} do not fit layer {layer.name} ({expected}): the file is another "
                        "architecture or width than the model it is mapped on")


class _Mapper:
    """Builds ``{layer name: [arrays]}`` slot by slot; a bias of a bias-free conv / dense goes into the BN after it."""

    def __init__(self, model, where):
        self.model, self.where, self.weights, self.pending_bias = model, where, {}, None

    def layer(self, slot):
        try:
            return self.model.get_layer(slot.layer)
        except ValueError:
            raise DataError(f"{self.where}: the model has no layer {slot.layer!r} for {slot.source}") from None

    def put(self, slot, arrays, where):
        layer = self.layer(slot)
        _check_shapes(layer, arrays, where)
        self.weights[slot.layer] = arrays

    def conv_or_dense(self, slot, weight, bias, where):
        layer = self.layer(slot)
        kernel = (_conv_kernel(weight, layer, where) if slot.kind == "conv"
                  else _dense_kernel(weight, layer, self.model, where))
        bias = None if bias is None else np.asarray(bias, np.float32).reshape(-1)
        if len(layer.weights) == 2:  # the Keras layer has a bias
            bias = np.zeros(layer.weights[1].shape, np.float32) if bias is None else bias
            self.put(slot, [kernel, bias], where)
            self.pending_bias = None
        else:
            self.put(slot, [kernel], where)
            self.pending_bias = bias

    def batch_norm(self, slot, gamma, beta, mean, var, where):
        """A BN; ``gamma`` ... ``None`` = folded into the conv before (identity, the conv's bias as shift)."""
        layer = self.layer(slot)
        channels = layer.weights[-1].shape[0]
        if mean is None:
            gamma, beta = np.ones(channels, np.float32), np.zeros(channels, np.float32)
            mean, var = np.zeros(channels, np.float32), np.full(channels, 1.0 - layer.epsilon, np.float32)
        gamma, beta, mean, var = (np.asarray(a, np.float32).reshape(-1) for a in (gamma, beta, mean, var))
        if self.pending_bias is not None:  # BN(conv(x) + b) = BN'(conv(x)) with the moving mean shifted by b
            mean, self.pending_bias = mean - self.pending_bias, None
        arrays = ([gamma] if layer.scale else []) + ([beta] if layer.center else []) + [mean, var]
        if not layer.scale and not np.allclose(gamma, 1.0, rtol=0, atol=1e-6):
            raise DataError(f"{where}: BatchNorm weight is not 1 (max |w - 1| = {np.abs(gamma - 1).max():.3g}), "
                            f"but arcface_torch fixes it at 1 and layer {layer.name} has none")
        self.put(slot, arrays, where)

    def prelu(self, slot, slope, where):
        layer = self.layer(slot)
        slope, shape = np.asarray(slope, np.float32).reshape(-1), tuple(layer.weights[0].shape)
        self.put(slot, [slope.reshape(shape) if slope.size == np.prod(shape) else slope], where)

    def finish(self):
        if self.pending_bias is not None:
            raise DataError(f"{self.where}: a bias with no layer to hold it after the last conv / linear layer")
        missing = [layer.name for layer in self.model.layers if layer.weights and layer.name not in self.weights]
        if missing:
            raise DataError(f"{self.where}: no weights for layers {', '.join(missing[:5])} of the model")
        return self.weights


def scale_stem(weights, affine, where):
    """Multiply the stem kernel so our ``(x - 127.5) / 128`` input gives the source's ``a * x + b`` (mean 127.5)."""
    scale, shift = affine
    if not np.isclose(-shift / scale, SOURCE_MEAN, rtol=0, atol=1e-3):
        raise DataError(f"{where}: the source normalises its input as (x - {-shift / scale:g}) * {scale:g}; only "
                        f"a mean of {SOURCE_MEAN} can be moved into the model's (x - 127.5) / 128 exactly")
    weights = dict(weights)
    weights[STEM_LAYER] = [weights[STEM_LAYER][0] * np.float32(scale * OUR_STD), *weights[STEM_LAYER][1:]]
    return weights


# ---- arcface_torch state dicts ----

def _count(keys, pattern):
    return len({match.group(1) for key in keys for match in [re.match(pattern, key)] if match})


def detect_state_dict_arch(state, where="state dict"):
    """``r18`` ... ``r200`` or ``mbf`` from an arcface_torch state dict's keys and shapes."""
    keys = list(state)
    if "layer1.0.bn1.weight" in state:
        blocks = tuple(_count(keys, rf"layer{stage}\.(\d+)\.") for stage in range(1, 5))
        depth = next((d for d, b in BLOCKS.items() if b == blocks and f"r{d}" in IRESNETS), None)
        if depth is None:
            raise DataError(f"{where}: an IR-ResNet with {blocks} blocks per stage, which is none of arcface_torch's "
                            f"{', '.join(IRESNETS)} ({', '.join(str(BLOCKS[int(a[1:])]) for a in IRESNETS)})")
        return f"r{depth}"
    if "conv_sep.layers.0.weight" in state:
        state_dict_mbf_layout(state, where)
        return "mbf"
    raise DataError(f"{where}: neither arcface_torch's iresnet (layer1.0.bn1.weight) nor mbf (conv_sep.*) keys; "
                    f"first keys: {', '.join(keys[:6])}")


def _mbf_width(stem_channels, where):
    """arcface_torch's ``scale`` of an mbf whose stem conv has ``stem_channels`` outputs (64 per unit)."""
    if stem_channels < MBF_STEM or stem_channels % MBF_STEM:
        raise DataError(f"{where}: an arcface_torch MobileFaceNet's stem has 64 x scale channels, this one "
                        f"{stem_channels}: not arcface_torch's mbf")
    return stem_channels // MBF_STEM


def state_dict_mbf_layout(state, where="state dict"):
    """``(scale, blocks)`` of an arcface_torch mbf state dict: the stem's channels and the residual runs."""
    keys = list(state)
    if "layers.0.layers.0.weight" not in state:
        raise DataError(f"{where}: no stem conv 'layers.0.layers.0.weight': not arcface_torch's mbf")
    width = _mbf_width(int(np.shape(state["layers.0.layers.0.weight"])[0]), where)
    runs = [_count(keys, rf"layers\.{index}\.layers\.(\d+)\.layers\.0\.layers\.0\.") for index in (1, 3, 5, 7)]
    stem = 1 if "layers.1.layers.0.weight" in state else runs[0]  # one grouped ConvBlock, or a residual run
    return width, (stem, *runs[1:])


def state_dict_weights(model, state, arch, where="state dict", blocks=MBF_BLOCKS):
    """``{layer name: [arrays]}`` for ``model`` (``arcface_torch_model(arch)``, ``blocks``: an mbf's) from an
    arcface_torch state dict; every parametrised layer of the model gets weights, and every tensor of the state
    dict is used (the BN step counters ``num_batches_tracked`` aside)."""
    mapper, used = _Mapper(model, where), set()

    def take(name):
        if name not in state:
            raise DataError(f"{where}: no tensor {name!r}, which arcface_torch's {arch} has")
        used.add(name)
        return state[name]

    for slot in arcface_torch_slots(arch, blocks):
        at = f"{where}: {slot.source}"
        if slot.kind in ("conv", "dense"):
            bias = take(f"{slot.source}.bias") if f"{slot.source}.bias" in state else None
            mapper.conv_or_dense(slot, take(f"{slot.source}.weight"), bias, at)
        elif slot.kind == "bn":
            names = ("weight", "bias", "running_mean", "running_var")
            mapper.batch_norm(slot, *(take(f"{slot.source}.{name}") for name in names), at)
        else:
            mapper.prelu(slot, take(f"{slot.source}.weight"), at)
    unused = [name for name in state if name not in used and not name.endswith("num_batches_tracked")]
    if unused:
        raise DataError(f"{where}: tensors {', '.join(unused[:5])} have no place in our {arch}")
    return mapper.finish()


# ---- ONNX graphs ----

def _conv_shape(op):
    return tuple(op.arrays["weight"].shape)


def detect_onnx_arch(ops, where="ONNX graph"):
    """``r18`` ... ``r200`` or ``mbf`` from the convolutions of an exported arcface_torch graph."""
    convs = [op for op in ops if op.kind == "conv"]
    if not convs:
        raise DataError(f"{where}: no convolution in the graph")
    if any(op.attrs.get("group", 1) > 1 for op in convs):
        onnx_mbf_layout(ops, where)
        return "mbf"
    blocks = []
    for width in (64, 128, 256, 512):
        mains = [op for op in convs if _conv_shape(op)[0] == width and _conv_shape(op)[2:] == (3, 3)
                 and _conv_shape(op)[1] != 3]
        blocks.append(len(mains) // 2)
    blocks = tuple(blocks)
    depth = next((d for d, b in BLOCKS.items() if b == blocks and f"r{d}" in IRESNETS), None)
    if depth is None:
        raise DataError(f"{where}: {len(convs)} convolutions that make no arcface_torch IR-ResNet or mbf "
                        f"(3x3 convs per stage width 64/128/256/512 give {blocks} blocks); give the model")
    return f"r{depth}"


def onnx_mbf_layout(ops, where="ONNX graph"):
    """``(scale, blocks)`` of an exported arcface_torch mbf: the stem conv's channels, and the residual Adds
    before, between and after its three stride-2 depthwise convs; with no Add before the first, ``blocks[0]``
    is 1 when a grouped stride-1 conv (the stem's ConvBlock) is there, else 0."""
    convs = [op for op in ops if op.kind == "conv"]
    if not convs:
        raise DataError(f"{where}: no convolution in the graph")
    runs, stem_group = [0], False
    for op in ops:
        grouped = op.kind == "conv" and op.attrs.get("group", 1) > 1
        if grouped and tuple(op.attrs.get("strides", (1, 1))) == (2, 2):
            runs.append(0)
        elif grouped and len(runs) == 1:
            stem_group = True
        elif op.kind == "add":
            runs[-1] += 1
    if len(runs) != 4:
        raise DataError(f"{where}: {len(runs) - 1} stride-2 grouped convolutions, arcface_torch's mbf has 3")
    stem = 1 if runs[0] == 0 and stem_group else runs[0]
    return _mbf_width(int(_conv_shape(convs[0])[0]), where), (stem, *runs[1:])


def _iresnet_order(ops):
    """The ops in PyTorch's module order: each 1x1 shortcut conv (and a BN on its output) right before the
    block's Add, wherever the exporter put them."""
    ordered, shortcut, shortcut_outputs = [], [], set()
    for op in ops:
        if op.kind == "conv" and _conv_shape(op)[2:] == (1, 1):
            shortcut.append(op)
            shortcut_outputs.add(op.output)
        elif op.kind == "bn" and op.input in shortcut_outputs:
            shortcut.append(op)
        elif op.kind == "add":
            ordered += shortcut + [op]
            shortcut = []
        else:
            ordered.append(op)
    return ordered + shortcut


def onnx_weights(model, graph, arch, where="ONNX graph", blocks=MBF_BLOCKS):
    """``{layer name: [arrays]}`` for ``model`` (``arcface_torch_model(arch)``, ``blocks``: an mbf's) from
    ``read_onnx_weights``'s ops: matched in PyTorch's order, BNs folded into a conv detected by the data flow."""
    ops = [op for op in (_iresnet_order(graph.ops) if arch in IRESNETS else graph.ops) if op.kind != "add"]
    mapper, index, before = _Mapper(model, where), 0, None  # before: the conv / dense op of the slot before

    def next_op(slot):
        if index >= len(ops):
            raise DataError(f"{where}: the graph ends before {slot.layer} ({slot.kind}); it is not arcface_torch's "
                            f"{arch}")
        return ops[index]

    for slot in arcface_torch_slots(arch, blocks):
        op = next_op(slot)
        at = f"{where}: node {op.name}"
        if slot.kind == "bn":
            if op.kind == "bn" and (before is None or op.input == before.output):
                mapper.batch_norm(slot, op.arrays["gamma"], op.arrays["beta"], op.arrays["mean"], op.arrays["var"],
                                  at)
                layer = mapper.layer(slot)
                if not np.isclose(op.attrs["epsilon"], layer.epsilon, rtol=1e-4, atol=0):
                    layer.epsilon = float(op.attrs["epsilon"])
                index += 1
            elif before is not None:  # folded into the conv before it by the exporter
                mapper.batch_norm(slot, None, None, None, None, at)
            else:
                raise DataError(f"{at} is a {op.kind}, expected the BatchNormalization of {slot.layer}")
            before = None
            continue
        if op.kind != slot.kind:
            raise DataError(f"{at} is a {op.kind}, expected a {slot.kind} for {slot.layer}: the graph is not "
                            f"arcface_torch's {arch}")
        if slot.kind == "prelu":
            mapper.prelu(slot, op.arrays["slope"], at)
            before = None
        else:
            mapper.conv_or_dense(slot, op.arrays["weight"], op.arrays.get("bias"), at)
            before = op
        index += 1
    if index != len(ops):
        raise DataError(f"{where}: {len(ops) - index} more layers after the embedding ({ops[index].name}, ...): "
                        f"the graph is not arcface_torch's {arch}")
    return mapper.finish()


# ---- entry points ----

def _emb_shape(weight):
    return int(np.shape(weight)[0])


def _assign(model, weights):
    for name, arrays in weights.items():
        model.get_layer(name).set_weights(arrays)
    return model


def _checked_arch(arch, detect, path):
    """``arch`` when given (an error when the file shows another one), else the detected one."""
    if arch is None:
        return detect()
    try:
        found = detect()
    except DataError:  # not recognised: the mapping itself names what does not fit
        return arch
    if found != arch:
        raise DataError(f"{path}: holds arcface_torch's {found}, not {arch} (--model)")
    return arch


def import_arcface_torch(path, arch=None):
    """Our Keras basic model holding arcface_torch state dict ``path`` (``.pth``); ``arch`` (``r18`` ...
    ``r200``, ``mbf``) is read from the keys when not given."""
    state = load_state_dict(path)
    arch = _checked_arch(arch, lambda: detect_state_dict_arch(state, str(path)), path)
    linear = "fc.weight" if arch in IRESNETS else "features.layers.2.weight"
    if linear not in state:
        raise DataError(f"{path}: no {linear!r}: not arcface_torch's {arch}")
    width, blocks = state_dict_mbf_layout(state, str(path)) if arch == "mbf" else (MBF_WIDTH, MBF_BLOCKS)
    model = arcface_torch_model(arch, _emb_shape(state[linear]), width, blocks)
    weights = state_dict_weights(model, state, arch, str(path), blocks)
    return _assign(model, scale_stem(weights, (1 / SOURCE_STD, -SOURCE_MEAN / SOURCE_STD), str(path)))


def import_onnx(path, arch=None):
    """Our Keras basic model holding the weights of an insightface recognition ONNX model (exported from
    arcface_torch); ``arch`` is read from the graph when not given. A graph that normalises its own input
    (``Sub`` / ``Mul`` first) keeps its constants, others get the model zoo's ``(x - 127.5) / 127.5``."""
    graph = read_onnx_weights(path)
    arch = _checked_arch(arch, lambda: detect_onnx_arch(graph.ops, str(path)), path)
    dense = [op for op in graph.ops if op.kind == "dense"]
    if not dense:
        raise DataError(f"{path}: no Gemm / MatMul with a weight: not an embedding model")
    width, blocks = onnx_mbf_layout(graph.ops, str(path)) if arch == "mbf" else (MBF_WIDTH, MBF_BLOCKS)
    model = arcface_torch_model(arch, _emb_shape(dense[-1].arrays["weight"]), width, blocks)
    weights = onnx_weights(model, graph, arch, str(path), blocks)
    affine = graph.input_affine or (1 / SOURCE_STD, -SOURCE_MEAN / SOURCE_STD)
    return _assign(model, scale_stem(weights, affine, str(path)))


def convert_insightface(src, dst, kind, arch=None):
    """Import ``src`` (``kind``: ``arcface-torch`` for a ``.pth`` state dict, ``onnx``) and save the basic model
    as ``dst`` (a ``.keras`` file, written atomically); returns the model."""
    if not str(dst).endswith(".keras"):
        raise DataError(f"{dst}: the output of an imported model must be a .keras file")
    if arch is not None and arch not in ARCHS:
        raise DataError(f"--model must be one of {', '.join(ARCHS)}, received {arch!r}")
    if kind == "arcface-torch":
        model = import_arcface_torch(src, arch)
    elif kind == "onnx":
        model = import_onnx(src, arch)
    else:
        raise ValueError(f"kind must be 'arcface-torch' or 'onnx', received kind={kind!r}")
    save_model(model, dst)
    return model

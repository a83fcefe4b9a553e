"""Importing insightface weights: arcface_torch ``.pth`` state dicts and their ONNX exports give our Keras models
the source's embeddings.

The reference is a PyTorch implementation of arcface_torch's ``iresnet`` and ``mbf`` written here from the layer
description of ``recognition/arcface_torch/backbones/iresnet.py`` and ``mobilefacenet.py`` (module names as there,
so its state dict has arcface_torch's keys), with random weights, BN statistics and PReLU slopes, fed as
arcface_torch feeds it: RGB, ``(x / 255 - 0.5) / 0.5``, NCHW. ONNX files come from ``torch.onnx.export``.
"""

import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from keras_insightface.cli import main
from keras_insightface.data.binpack import decode_bin_images, load_bin
from keras_insightface.errors import DataError
from keras_insightface.inference.insightface_import import (
    arcface_torch_model, detect_onnx_arch, detect_state_dict_arch, onnx_mbf_layout, state_dict_mbf_layout,
    state_dict_weights,
)
from keras_insightface.inference.onnx_weights import read_onnx_weights
from keras_insightface.inference.torch_pth import load_state_dict
from keras_insightface.saving import load_model

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch (the compat extra)")
nn = torch.nn

IRESNET_BLOCKS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3),
                  "r200": (6, 26, 60, 6)}
MAX_RELATIVE = 1e-4
# arcface_torch's torch2onnx.py uses the TorchScript exporter (the dynamo one needs onnxscript); torch 2.9+ warns
pytestmark = [
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning"),
]


# ---- the reference: arcface_torch's networks from their published layer description ----

class IBasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, blocks, num_features=512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for stage, count in enumerate(blocks):
            planes = 64 * 2**stage
            stack = [IBasicBlock(inplanes, planes, 2)] + [IBasicBlock(planes, planes, 1) for _ in range(count - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*stack))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(p=0)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


class ConvBlock(nn.Module):
    """Conv, BN and (unless ``linear``) PReLU in ``.layers``, as arcface_torch's ConvBlock / LinearBlock."""

    def __init__(self, cin, cout, kernel=1, stride=1, padding=0, groups=1, linear=False):
        super().__init__()
        parts = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        self.layers = nn.Sequential(*parts, *([] if linear else [nn.PReLU(cout)]))

    def forward(self, x):
        return self.layers(x)


class DepthWise(nn.Module):
    def __init__(self, cin, cout, residual, stride, groups):
        super().__init__()
        self.residual = residual
        self.layers = nn.Sequential(ConvBlock(cin, groups), ConvBlock(groups, groups, 3, stride, 1, groups=groups),
                                    ConvBlock(groups, cout, linear=True))

    def forward(self, x):
        return x + self.layers(x) if self.residual else self.layers(x)


class Residual(nn.Module):
    def __init__(self, channels, count, groups):
        super().__init__()
        self.layers = nn.Sequential(*[DepthWise(channels, channels, True, 1, groups) for _ in range(count)])

    def forward(self, x):
        return self.layers(x)


class GDC(nn.Module):
    def __init__(self, num_features):
        super().__init__()
        self.layers = nn.Sequential(ConvBlock(512, 512, 7, groups=512, linear=True), nn.Flatten(),
                                    nn.Linear(512, num_features, bias=False), nn.BatchNorm1d(num_features))

    def forward(self, x):
        return self.layers(x)


class MobileFaceNet(nn.Module):
    """arcface_torch's MobileFaceNet; the defaults are ``get_mbf``'s, ``scale=1`` is the paper's widths. The
    stem's second conv has 64 groups (depthwise only at ``scale=1``) or is a residual run when ``blocks[0] != 1``;
    hidden widths are absolute (128, 128, 256, 256, 512, 256), not multiples of the channels."""

    def __init__(self, num_features=512, blocks=(1, 4, 6, 2), scale=2):
        super().__init__()
        c64, c128 = 64 * scale, 128 * scale
        stem = ConvBlock(c64, c64, 3, 1, 1, groups=64) if blocks[0] == 1 else Residual(c64, blocks[0], 128)
        self.layers = nn.ModuleList([
            ConvBlock(3, c64, 3, 2, 1), stem,
            DepthWise(c64, c64, False, 2, 128), Residual(c64, blocks[1], 128),
            DepthWise(c64, c128, False, 2, 256), Residual(c128, blocks[2], 256),
            DepthWise(c128, c128, False, 2, 512), Residual(c128, blocks[3], 256),
        ])
        self.conv_sep = ConvBlock(c128, 512)
        self.features = GDC(num_features)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.features(self.conv_sep(x))


def randomize(model, seed):
    """Weights as a trained network has them: BN statistics and affine terms away from 0 / 1, PReLU slopes
    spread over channels; arcface_torch's fixed ``features`` weight stays 1 in an IResNet."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor, low, high):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in**0.5)
                if module.bias is not None:
                    uniform(module.bias, -0.1, 0.1)
            elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                if module.weight.requires_grad:
                    uniform(module.weight, 0.5, 1.5)
                uniform(module.bias, -0.2, 0.2)
                uniform(module.running_mean, -0.2, 0.2)
                uniform(module.running_var, 0.5, 2.0)
            elif isinstance(module, nn.PReLU):
                uniform(module.weight, 0.0, 0.5)
    return model.eval()


def torch_embed(model, images):
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        return model((x / 255 - 0.5) / 0.5).numpy()


class Normalised(nn.Module):
    """``model`` with arcface_torch's input normalisation inside, as mxnet-era model-zoo graphs (Sub, Mul first)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model((x - 127.5) * (1 / 127.5))


def export_onnx(model, path, fold):
    """``torch.onnx.export`` as arcface_torch's ``torch2onnx.py`` (opset 11); ``fold=False`` keeps every BN node."""
    torch.onnx.export(model, torch.zeros(1, 3, 112, 112), str(path), input_names=["data"], opset_version=11,
                      do_constant_folding=fold, dynamo=False)
    return path


def relative_difference(got, reference):
    return float(np.abs(got - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def faces():
    from tests.conftest import REAL_FACES

    pack = REAL_FACES / "small_lfw.bin"
    if not pack.is_file():
        pytest.skip(f"real-face fixture {pack} not found")
    return decode_bin_images(load_bin(pack)[0], pack)


def _embed(model, images):
    return np.asarray(model.predict(images.astype(np.float32), batch_size=len(images), verbose=0))


@pytest.mark.parametrize("arch, fold, normalised", [("r18", True, False), ("mbf", False, True)])
def test_pth_and_onnx_give_the_source_embeddings(arch, fold, normalised, faces, tmp_path, capsys):
    """r18: the ONNX export folds BNs into convs; mbf (get_mbf's default, scale 2): every BN node kept and the
    normalisation in the graph."""
    source = randomize(IResNet(IRESNET_BLOCKS["r18"]) if arch == "r18" else MobileFaceNet(), seed=1)
    reference = torch_embed(source, faces)
    pth, onnx_path = tmp_path / "backbone.pth", tmp_path / "model.onnx"
    torch.save(source.state_dict(), pth)
    export_onnx(Normalised(source) if normalised else source, onnx_path, fold)
    graph = read_onnx_weights(onnx_path)
    bns = sum(op.kind == "bn" for op in graph.ops)
    assert bns == {("r18", True): 10, ("mbf", False): 50}[arch, fold]  # folded: only the BNs after an Add / linear
    assert (graph.input_affine is not None) == normalised

    assert main(["convert", "arcface-torch", str(pth), str(tmp_path / "pth.keras"), "--model", arch]) == 0
    assert main(["convert", "onnx", str(onnx_path), str(tmp_path / "onnx.keras")]) == 0  # arch read from the graph
    assert f"({arch}, 512-d embedding, input RGB 0..255)" in capsys.readouterr().out
    from_pth, from_onnx = load_model(str(tmp_path / "pth.keras")), load_model(str(tmp_path / "onnx.keras"))
    assert from_pth.layers[-1].name == "embedding" and from_pth.get_layer("normalize").scale == 1 / 128
    if arch == "mbf":  # scale 2: a 128-channel stem, its second conv in 64 groups
        stem = from_pth.get_layer("stem_group_conv")
        assert (type(stem).__name__, stem.filters, stem.groups) == ("Conv2D", 128, 64)
    pth_embeddings = _embed(from_pth, faces)
    # one compiled forward for both: the ONNX import must be the same network, then its weights are run
    assert from_onnx.get_config()["layers"] == from_pth.get_config()["layers"]
    from_pth.set_weights(from_onnx.get_weights())
    onnx_embeddings = _embed(from_pth, faces)
    differences = relative_difference(pth_embeddings, reference), relative_difference(onnx_embeddings, reference)
    print(f"{arch}: max |keras - torch| / max |torch| = {differences[0]:.2e} (pth), {differences[1]:.2e} (onnx)")
    assert max(differences) <= MAX_RELATIVE


def meta_state(source):
    """The state dict of ``source`` (built on the meta device: shapes only) as numpy arrays of ones."""
    return {name: np.broadcast_to(np.float32(1), tuple(tensor.shape)) for name, tensor in source.state_dict().items()}


# mbf layouts: the paper's widths; a residual stem run, an empty stage; get_mbf_large (scale 4, blocks 2, 8, 12, 4)
MBF_LAYOUTS = {"mbf_s1": (1, (1, 4, 6, 2)), "mbf_s2_stem_run": (2, (3, 1, 0, 1)), "mbf_large": (4, (2, 8, 12, 4))}


@pytest.mark.parametrize("name", ["r34", "r50", "r100", "r200", *MBF_LAYOUTS])
def test_state_dict_maps_one_to_one(name):
    arch = "mbf" if name in MBF_LAYOUTS else name
    with torch.device("meta"):
        source = MobileFaceNet(blocks=MBF_LAYOUTS[name][1], scale=MBF_LAYOUTS[name][0]) if arch == "mbf" else (
            IResNet(IRESNET_BLOCKS[arch]))
    state = meta_state(source)
    assert detect_state_dict_arch(state) == arch
    layout = state_dict_mbf_layout(state) if arch == "mbf" else ()
    assert layout == MBF_LAYOUTS.get(name, ())
    model = arcface_torch_model(arch, 512, *layout)
    weights = state_dict_weights(model, state, arch, "state dict", *layout[1:])
    assert sorted(weights) == sorted(layer.name for layer in model.layers if layer.weights)
    fixed = () if arch == "mbf" else ("features.weight",)  # iresnet's BatchNorm1d weight: 1, no gamma here
    torch_count = sum(array.size for key, array in state.items()
                      if not key.endswith("num_batches_tracked") and key not in fixed)
    assert sum(a.size for arrays in weights.values() for a in arrays) == model.count_params() == torch_count


def test_buildin_mbf_is_get_mbf_parameter_for_parameter():
    """``buildin_models("mbf")``: arcface_torch's get_mbf(False, 512) with the same parameters (trainable weights)
    and buffers (BN statistics, non-trainable) in the same order and shapes."""
    from keras_insightface.models import buildin_models

    with torch.device("meta"):
        source = MobileFaceNet()
    model = buildin_models("mbf", weights=None)
    parameters = sum(p.numel() for p in source.parameters())
    buffers = sum(b.numel() for name, b in source.named_buffers() if not name.endswith("num_batches_tracked"))
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == parameters == 2_059_520
    assert model.count_params() == parameters + buffers
    bad = {"width": 1.5}, {"blocks": (1, 4, 6)}, {"blocks": (1, -1, 6, 2)}
    for options in bad:
        with pytest.raises(ValueError, match="mbf (width|blocks)"):
            buildin_models("mbf", weights=None, **options)


def test_mbf_stem_not_a_multiple_of_64_is_a_clear_error():
    with torch.device("meta"):
        state = meta_state(MobileFaceNet(scale=1))
    state["layers.0.layers.0.weight"] = np.ones((96, 3, 3, 3), np.float32)
    with pytest.raises(DataError, match=r"mbf96.pth: an arcface_torch MobileFaceNet's stem has 64 x scale channels, "
                                        r"this one 96"):
        detect_state_dict_arch(state, "mbf96.pth")


def test_other_mbf_layouts_through_onnx(faces, tmp_path):
    """A residual stem run and an empty stage (scale 1, blocks 3, 1, 0, 1), BNs folded by the exporter: the
    layout is read from the graph and the embeddings are the source's; blocks[0] = 0 (no stem conv) is told
    apart from 1 (one grouped conv) by the graph alone."""
    from keras_insightface.inference.insightface_import import import_onnx

    source = randomize(MobileFaceNet(blocks=(3, 1, 0, 1), scale=1), seed=3)
    graph = read_onnx_weights(export_onnx(source, tmp_path / "run.onnx", fold=True))
    assert onnx_mbf_layout(graph.ops) == (1, (3, 1, 0, 1))
    model = import_onnx(tmp_path / "run.onnx")
    difference = relative_difference(_embed(model, faces[:8]), torch_embed(source, faces[:8]))
    print(f"mbf scale 1, blocks (3, 1, 0, 1), folded ONNX: max relative difference {difference:.2e}")
    assert difference <= MAX_RELATIVE
    for blocks in ((0, 1, 1, 1), (1, 0, 0, 0)):
        graph = read_onnx_weights(export_onnx(MobileFaceNet(blocks=blocks).eval(), tmp_path / "x.onnx", fold=True))
        assert onnx_mbf_layout(graph.ops) == (2, blocks)


def test_paper_mobilefacenet_and_open_model_on_a_state_dict(faces, tmp_path):
    """``open_model`` imports an arcface_torch ``.pth`` state dict in memory and embeds as the source does; at
    scale 1 the same weights in ``mobilefacenet_insightface`` (the paper's layout) give the same embeddings."""
    from keras_insightface.inference.embedders import KerasEmbedder, open_model
    from keras_insightface.models import buildin_models

    source = randomize(MobileFaceNet(scale=1), seed=4)
    reference = torch_embed(source, faces)
    torch.save(source.state_dict(), tmp_path / "backbone.pth")
    embedder = open_model(tmp_path / "backbone.pth")
    assert isinstance(embedder, KerasEmbedder) and embedder.model.name == "mbf"
    assert not list(tmp_path.glob("*.keras"))  # imported in memory
    assert relative_difference(embedder(faces), reference) <= MAX_RELATIVE
    paper = buildin_models("mobilefacenet_insightface", dropout=0, weights=None, bn_momentum=0.9, bn_epsilon=1e-5)
    paper.set_weights(embedder.model.get_weights())
    difference = relative_difference(_embed(paper, faces), reference)
    print(f"mobilefacenet_insightface with arcface_torch mbf scale-1 weights: max relative difference {difference:.2e}")
    assert difference <= MAX_RELATIVE
    with pytest.raises(DataError, match="backbone.pth: an arcface_torch state dict opens as a Keras model"):
        open_model(tmp_path / "backbone.pth", input_mean=0)


def test_torch_file_that_is_neither_names_both(tmp_path):
    from keras_insightface.inference.embedders import open_model

    torch.save(nn.Linear(2, 3).state_dict(), tmp_path / "linear.pth")
    with pytest.raises(DataError, match=r"linear.pth: not a TorchScript module \(no code/ or constants.pkl in the "
                                        r"zip\), and as a torch.save state dict not one of arcface_torch's iresnet / "
                                        r"mbf: neither arcface_torch's iresnet .* first keys: weight, bias"):
        open_model(tmp_path / "linear.pth")
    (tmp_path / "text.pth").write_text("not a model")
    with pytest.raises(DataError, match=r"text.pth: not a TorchScript module \(.*\); .* nor a torch.save zip "
                                        r"holding an arcface_torch state dict"):
        open_model(tmp_path / "text.pth")


def test_wrong_model_and_foreign_graph_are_named(tmp_path, capsys):
    source = randomize(MobileFaceNet(), seed=2)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "mbf.pth")
    assert main(["convert", "arcface-torch", str(tmp_path / "mbf.pth"), str(tmp_path / "x.keras"), "--model",
                 "r18"]) == 2
    assert "mbf.pth: holds arcface_torch's mbf, not r18 (--model)" in capsys.readouterr().err
    foreign = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 110 * 110, 4)).eval()
    export_onnx(foreign, tmp_path / "foreign.onnx", fold=True)
    with pytest.raises(DataError, match="foreign.onnx: 1 convolutions that make no arcface_torch IR-ResNet or mbf"):
        detect_onnx_arch(read_onnx_weights(tmp_path / "foreign.onnx").ops, str(tmp_path / "foreign.onnx"))
    assert not (tmp_path / "x.keras").exists()


# ---- the .pth reader, checked against torch's own tensors ----

def test_reader_matches_torch_on_dtypes_views_and_wrappers(tmp_path):
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "float": torch.randn(4, 3, 3, 3, generator=generator),
        "half": torch.randn(5, 7, generator=generator).half(),
        "bfloat16": torch.randn(6, generator=generator).bfloat16(),
        "strided": torch.randn(6, 8, generator=generator)[:, 1::3].t(),  # offset, non-contiguous, transposed
        "steps": torch.tensor(12345678901),
        "empty": torch.zeros(0, 3),
    }
    shared = torch.randn(10, generator=generator)
    tensors["shared_a"], tensors["shared_b"] = shared[:4], shared[4:].view(2, 3)  # one storage, two views
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in tensors.items()}}, tmp_path / "ckpt.pt")
    state = load_state_dict(tmp_path / "ckpt.pt")
    assert list(state) == list(tensors)
    for name, tensor in tensors.items():
        expected = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        assert state[name].dtype == expected.dtype and state[name].shape == expected.shape, name
        np.testing.assert_array_equal(state[name], expected, err_msg=name)


def test_reader_needs_no_torch(tmp_path):
    torch.save({"w": torch.arange(6.0).view(2, 3)}, tmp_path / "w.pth")
    code = ("import sys; sys.modules['torch'] = None\n"  # any `import torch` now raises ImportError
            "from keras_insightface.inference.torch_pth import load_state_dict\n"
            f"print(load_state_dict({str(tmp_path / 'w.pth')!r})['w'].tolist())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]"


def _archive_with_pickle(path, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", payload)
        archive.writestr("evil/version", "3\n")
    return path


def test_reader_refuses_code_and_truncation(tmp_path):
    marker = tmp_path / "pwned"
    payload = b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."  # os.system("touch ...") when loaded
    with pytest.raises(DataError, match=r"evil.pth: refusing to unpickle the global os\.system"):
        load_state_dict(_archive_with_pickle(tmp_path / "evil.pth", payload))
    assert not marker.exists()
    pickle.loads(payload)  # the control: a plain unpickler runs the command
    assert marker.exists()
    gadget = pickle.dumps({"w": np.zeros(2)})  # numpy's reconstructor is no torch tensor either
    with pytest.raises(DataError, match=r"refusing to unpickle the global numpy.*_reconstruct"):
        load_state_dict(_archive_with_pickle(tmp_path / "numpy.pth", gadget))

    torch.save({"w": torch.ones(64, 64)}, tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.pth: not a torch.save zip archive, or truncated"):
        load_state_dict(tmp_path / "cut.pth")
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(DataError, match=r"old.pth: written in torch's format from before 1.6"):
        load_state_dict(tmp_path / "old.pth")


def test_onnx_reader_sees_through_layout_ops(tmp_path):
    """A BN on an unsqueezed Gemm output still follows the Gemm; a MatMul + constant Add is one biased linear."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(4, 3)).astype(np.float32), np.arange(4, dtype=np.float32)
    stats = np.ones(4, np.float32)
    initializers = [numpy_helper.from_array(array, name) for array, name in
                    [(weight, "w"), (bias, "b"), (stats, "g"), (stats * 0, "beta"), (stats * 0, "m"), (stats, "v"),
                     (np.array([2], np.int64), "axes")]]
    nodes = [helper.make_node("MatMul", ["x", "w_t"], ["mm"]), helper.make_node("Transpose", ["w"], ["w_t"]),
             helper.make_node("Add", ["mm", "b"], ["fc"]), helper.make_node("Unsqueeze", ["fc", "axes"], ["fc3"]),
             helper.make_node("BatchNormalization", ["fc3", "g", "beta", "m", "v"], ["bn3"], epsilon=2e-5),
             helper.make_node("Squeeze", ["bn3", "axes"], ["y"])]
    nodes.insert(0, nodes.pop(1))  # the Transpose of the weight first, as a graph must be sorted
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "head.onnx")
    dense, bn = read_onnx_weights(tmp_path / "head.onnx").ops
    assert dense.kind == "dense" and bn.kind == "bn" and bn.input == dense.output
    assert bn.attrs["epsilon"] == pytest.approx(2e-5)
    np.testing.assert_array_equal(dense.arrays["weight"], weight)  # MatMul(x, w.T): PyTorch's (out, in) is w
    np.testing.assert_array_equal(dense.arrays["bias"], bias)

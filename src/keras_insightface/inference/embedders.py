"""Open any face-embedding model into one interface: ``embedder(uint8 NHWC RGB batch) -> float32 (B, D)``.

``open_model`` takes:
    - ``.keras`` / ``.h5``: our models and seed ``.h5`` files (``saving.load_model``), which normalise inside;
      a Keras model object likewise. Batches are split over every device when the model's variables live on a
      mesh of several devices (training under a distribution), else run through ``predict_on_batch``.
    - ``.onnx``: onnxruntime, with insightface's model-zoo convention: NCHW or NHWC from the input shape,
      RGB order, and ``(x - 127.5) / 127.5`` unless one of the graph's first 8 nodes is a ``Sub`` and one a
      ``Mul`` (an mxnet-converted model that normalises itself: mean 0, std 1). A ``uint8`` input gets the
      raw pixels.
    - ``.pt`` / ``.pth``: a TorchScript module (``torch.jit.save``: its zip holds ``code/`` and
      ``constants.pkl``), NCHW float ``(x / 255 - 0.5) / 0.5`` as arcface_torch feeds it; any other
      ``torch.save`` zip is an arcface_torch state dict (``backbone.pth``, or a checkpoint holding one), imported
      into our Keras model in memory (``insightface_import``, read without PyTorch) and run as a Keras model.
    - any callable ``uint8 NHWC batch -> (B, D)``, or an ``Embedder`` (returned as it is).

Every embedder has ``size`` (the ``(height, width)`` face crop it takes; 112x112 when the model does not say)
and ``path`` (the file it was opened from, or ``None``).

Example:
    >>> import numpy as np
    >>> embedder = open_model(lambda images: np.asarray(images, "float32").mean(axis=(1, 2)))
    >>> embedder(np.zeros((2, 112, 112, 3), "uint8")).shape, embedder.size
    ((2, 3), (112, 112))
"""

import os
from pathlib import Path

import numpy as np

from keras_insightface.errors import DataError
from keras_insightface.inference.torch_pth import is_weights_archive

AUTO = "auto"
DEFAULT_INPUT_SIZE = (112, 112)
KERAS_SUFFIXES = (".keras", ".h5")
MODEL_SUFFIXES = (*KERAS_SUFFIXES, ".onnx", ".pt", ".pth")
ONNX_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}


def _static_size(size):
    """``(height, width)`` when both are positive ints, else the ArcFace crop size."""
    size = tuple(size or ())
    if len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size):
        return size
    return DEFAULT_INPUT_SIZE


class Embedder:
    """A batch callable ``uint8 NHWC RGB -> float32 (B, D)`` with the crop ``size`` it takes and its ``path``."""

    path = None
    size = DEFAULT_INPUT_SIZE

    def __call__(self, images):
        raise NotImplementedError

    def views(self, images, flip=False):
        """``[embeddings]``, plus ``[embeddings of the mirrored images]`` with ``flip``: two calls here; a Keras
        model runs both in one compiled function."""
        views = [self(images)]
        if flip:
            views.append(self(np.ascontiguousarray(np.asarray(images)[:, :, ::-1])))
        return views


class CallableEmbedder(Embedder):
    """Any ``batch -> (B, D)`` callable as an embedder (its ``size`` / ``path`` attributes are kept if it has them)."""

    def __init__(self, function):
        self.function = function
        self.size = _static_size(getattr(function, "size", None))
        path = getattr(function, "path", None)
        self.path = path if isinstance(path, (str, os.PathLike)) else None

    def __call__(self, images):
        return np.asarray(self.function(images), dtype=np.float32)


class KerasEmbedder(Embedder):
    """A Keras basic model (normalisation inside) as an embedder.

    When the model's variables live on a mesh of several devices (training under a distribution, also across
    hosts), each batch is split over every device of the mesh and the embeddings come back whole on every host:
    evaluation at the training's parallelism. Every host passes the same batch; its size must then be a
    multiple of the device count.
    """

    def __init__(self, model, path=None):
        self.model, self.path = model, path
        shape = getattr(model, "input_shape", None)
        self.size = _static_size(shape[1:3] if shape is not None and len(shape) == 4 else None)
        self._sharded, self._with_mirror = None, None

    def _mesh(self):
        if not self.model.variables:
            return None
        sharding = getattr(self.model.variables[0].value, "sharding", None)
        mesh = getattr(sharding, "mesh", None)
        return mesh if mesh is not None and mesh.size > 1 else None

    def _compiled(self, mesh):
        import jax

        batch = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(tuple(mesh.axis_names)))
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

        def forward(trainable, non_trainable, images):
            return self.model.stateless_call(trainable, non_trainable, images, training=False)[0]

        return batch, jax.jit(forward, out_shardings=replicated)

    def views(self, images, flip=False):
        """Both views from one compiled forward of the image batch and its mirror (the mirror made on the device:
        one transfer of the batch, one dispatch); on a mesh, the sharded forward once per view."""
        if not flip or self._mesh() is not None:
            return super().views(images, flip)
        if self._with_mirror is None:
            import keras

            inputs = keras.Input(self.model.input_shape[1:], name="image")
            both = [self.model(inputs), self.model(keras.ops.flip(inputs, axis=2))]  # axis 2: NHWC width
            self._with_mirror = keras.Model(inputs, both, name=f"{self.model.name}_with_mirror")
        outputs = self._with_mirror.predict_on_batch(np.asarray(images, dtype="float32"))
        return [np.asarray(view, dtype=np.float32) for view in outputs]

    def __call__(self, images):
        images = np.asarray(images, dtype="float32")
        mesh = self._mesh()
        if mesh is None:
            return np.asarray(self.model.predict_on_batch(images), dtype=np.float32)
        if images.shape[0] % mesh.size:
            raise ValueError(f"an evaluation batch of {images.shape[0]} does not split over {mesh.size} devices")
        if self._sharded is None:
            self._sharded = self._compiled(mesh)
        import jax

        batch, forward = self._sharded
        array = jax.make_array_from_callback(images.shape, batch, lambda index: images[index])
        trainable = [v.value for v in self.model.trainable_variables]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        return np.asarray(forward(trainable, non_trainable, array), dtype=np.float32)


def onnx_normalises_itself(model_proto):
    """insightface's test: a ``Sub`` and a ``Mul`` among the first 8 nodes mean the graph normalises its input.

    Nodes count by name (``Sub*``/``_minus*``, ``Mul*``/``_mul*``, as insightface) or by op type, since newer
    exporters name nodes ``/Sub`` or ``node_Sub_0``. Models exported by this project (``producer`` metadata
    ``keras_insightface ...``) always do: some have the normalisation folded into the first convolution.
    """
    producer = {prop.key: prop.value for prop in model_proto.metadata_props}.get("producer", "")
    if producer.startswith("keras_insightface"):
        return True
    nodes = model_proto.graph.node[:8]
    sub = any(n.op_type == "Sub" or n.name.startswith(("Sub", "_minus")) for n in nodes)
    mul = any(n.op_type == "Mul" or n.name.startswith(("Mul", "_mul")) for n in nodes)
    return sub and mul


class OnnxEmbedder(Embedder):
    """An ONNX embedding model run by onnxruntime (CUDA when onnxruntime has it, else CPU)."""

    def __init__(self, path, input_mean=AUTO, input_std=AUTO):
        try:
            import onnx
            import onnxruntime
        except ImportError as error:
            raise DataError(
                f"{path}: ONNX models need onnxruntime and onnx ({error}); pip install keras_insightface[onnx]"
            ) from None
        try:
            proto = onnx.load(os.fspath(path), load_external_data=False)
            providers = ["CPUExecutionProvider"]
            if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
                providers.insert(0, "CUDAExecutionProvider")
            self.session = onnxruntime.InferenceSession(os.fspath(path), providers=providers)
        except Exception as error:  # onnx and onnxruntime raise their own exception types for unreadable graphs
            raise DataError(f"{path}: cannot load the ONNX model ({type(error).__name__}: {error})") from None
        spec = self.session.get_inputs()[0]
        self.input_name, shape = spec.name, list(spec.shape)
        if len(shape) != 4 or 3 not in (shape[1], shape[3]):
            raise DataError(
                f"{path}: ONNX input {spec.name!r} has shape {shape}, expected NCHW or NHWC with 3 channels"
            )
        if spec.type not in ONNX_DTYPES:
            raise DataError(f"{path}: ONNX input type {spec.type} is not one of {', '.join(ONNX_DTYPES)}")
        self.channels_first, self.dtype = shape[1] == 3, ONNX_DTYPES[spec.type]
        self.path, self.input_size = path, shape[2:4] if self.channels_first else shape[1:3]
        self.size = _static_size(self.input_size)
        self.fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        if self.dtype == np.uint8:
            if (input_mean, input_std) not in ((AUTO, AUTO), (0, 1)):
                raise DataError(f"{path}: the ONNX input is uint8 (raw pixels); input_mean/input_std cannot apply")
            self.mean, self.std = 0.0, 1.0
        else:
            auto_mean, auto_std = (0.0, 1.0) if onnx_normalises_itself(proto) else (127.5, 127.5)
            self.mean = auto_mean if input_mean == AUTO else float(input_mean)
            self.std = auto_std if input_std == AUTO else float(input_std)

    def _run(self, blob):
        if self.fixed_batch is None:
            return self.session.run(None, {self.input_name: blob})[0]
        outputs, count = [], len(blob)
        for start in range(0, count, self.fixed_batch):
            part = blob[start : start + self.fixed_batch]
            padded = np.concatenate([part, np.zeros((self.fixed_batch - len(part), *part.shape[1:]), part.dtype)])
            outputs.append(self.session.run(None, {self.input_name: padded})[0][: len(part)])
        return np.concatenate(outputs)

    def __call__(self, images):
        images = np.asarray(images)
        if any(isinstance(n, int) and n != m for n, m in zip(self.input_size, images.shape[1:3])):
            raise DataError(
                f"{self.path}: the ONNX model takes {self.input_size} images, received {list(images.shape[1:3])}"
            )
        if self.dtype == np.uint8:
            blob = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        else:
            blob = ((images.astype(np.float32) - self.mean) / self.std).astype(self.dtype)
        if self.channels_first:
            blob = blob.transpose(0, 3, 1, 2)
        output = self._run(np.ascontiguousarray(blob))
        return np.asarray(output, dtype=np.float32).reshape(len(images), -1)


class TorchScriptEmbedder(Embedder):
    """A TorchScript embedding model fed NCHW float ``(x / 255 - 0.5) / 0.5`` (arcface_torch), on CUDA if present."""

    def __init__(self, path, input_mean=AUTO, input_std=AUTO):
        try:
            import torch
        except ImportError as error:
            raise DataError(
                f"{path}: TorchScript models need torch ({error}); pip install keras_insightface[compat]"
            ) from None
        self.torch, self.path = torch, path
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.module = torch.jit.load(os.fspath(path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as error:
            raise DataError(
                f"{path}: not a TorchScript module ({error}); save one with torch.jit.save(torch.jit.script(model)); "
                "nor a torch.save zip holding an arcface_torch state dict (torch.save(backbone.state_dict(), ...))"
            ) from None
        self.mean = 127.5 if input_mean == AUTO else float(input_mean)
        self.std = 127.5 if input_std == AUTO else float(input_std)

    def __call__(self, images):
        torch = self.torch
        blob = (np.asarray(images, dtype=np.float32) - self.mean) / self.std
        with torch.no_grad():
            tensor = torch.from_numpy(np.ascontiguousarray(blob.transpose(0, 3, 1, 2))).to(self.device)
            output = self.module(tensor)
        return output.float().cpu().numpy().reshape(len(images), -1)


def _open_state_dict(path, input_mean, input_std):
    """A Keras embedder of arcface_torch state dict ``path``, imported in memory (no file written)."""
    if (input_mean, input_std) != (AUTO, AUTO):
        raise DataError(f"{path}: an arcface_torch state dict opens as a Keras model, which normalises inside; "
                        "input_mean/input_std apply to .onnx and TorchScript models")
    from keras_insightface.inference.insightface_import import import_arcface_torch

    try:
        model = import_arcface_torch(path)
    except DataError as error:
        reason = str(error).removeprefix(f"{path}: ")
        raise DataError(f"{path}: not a TorchScript module (no code/ or constants.pkl in the zip), and as a "
                        f"torch.save state dict not one of arcface_torch's iresnet / mbf: {reason}") from None
    return KerasEmbedder(model, path)


def _open_file(path, input_mean, input_std):
    suffix = Path(path).suffix.lower()
    if suffix not in MODEL_SUFFIXES:
        raise DataError(
            f"{path}: unknown model format {suffix or '(no suffix)'!r}; expected one of {', '.join(MODEL_SUFFIXES)}"
        )
    if not os.path.isfile(path):
        raise DataError(f"{path}: model file does not exist")
    if suffix in KERAS_SUFFIXES:
        if (input_mean, input_std) != (AUTO, AUTO):
            raise DataError(
                f"{path}: Keras models normalise inside; input_mean/input_std apply to .onnx and .pt models"
            )
        from keras_insightface.saving import load_model

        return KerasEmbedder(load_model(path), path)
    if suffix == ".onnx":
        return OnnxEmbedder(path, input_mean, input_std)
    if is_weights_archive(path):
        return _open_state_dict(path, input_mean, input_std)
    return TorchScriptEmbedder(path, input_mean, input_std)


def open_model(model, input_mean=AUTO, input_std=AUTO):
    """An ``Embedder`` for a model file, a Keras model, a batch callable or an embedder (see the module docstring).

    ``input_mean`` / ``input_std`` override the ``(x - mean) / std`` of ``.onnx`` and TorchScript ``.pt``
    models (``"auto"``: the format's convention).
    """
    if isinstance(model, (str, os.PathLike)):
        return _open_file(os.fspath(model), input_mean, input_std)
    if (input_mean, input_std) != (AUTO, AUTO):
        raise DataError("input_mean/input_std apply to .onnx and .pt model files only")
    if isinstance(model, Embedder):
        return model
    if hasattr(model, "predict_on_batch") and hasattr(model, "stateless_call"):
        return KerasEmbedder(model)
    if not callable(model):
        raise DataError(f"model: expected a model file, a Keras model or a callable, received {type(model).__name__}")
    return CallableEmbedder(model)

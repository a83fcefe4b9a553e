"""Teacher embeddings for distillation: run a teacher over a dataset and store them aligned with its images.

``load_teacher(path)`` turns a model file into ``uint8 NHWC RGB batch -> float32 (B, D)``:
    - ``.keras`` / ``.h5``: our models (and seed ``.h5`` files), which normalise inside.
    - ``.onnx``: onnxruntime, with insightface's model-zoo convention: NCHW or NHWC from the input shape,
      RGB order, and ``(x - 127.5) / 127.5`` unless one of the graph's first 8 nodes is a ``Sub`` and one a
      ``Mul`` (an mxnet-converted model that normalises itself: mean 0, std 1). A ``uint8`` input gets the
      raw pixels.
    - ``.pt`` / ``.pth``: a TorchScript module (``torch.jit.save``), NCHW float ``(x / 255 - 0.5) / 0.5`` as
      arcface_torch feeds it.

``distill_data`` writes an npz that ``open_source`` reads back as a training source with ``embeddings``:
``embeddings`` (float32, L2-normalised as the seed's ``data_distiller.py`` stores them; the distillation
losses normalise again, so this only fixes their scale), ``image_classes``, and ``image_names`` (relative to the
npz's folder) or, for RecordIO, ``rec_path`` (plus ``image_indices`` when only some records are used).
Records keep the source's order.

Example:
    >>> import numpy as np, simplejpeg
    >>> from keras_insightface.data.recordio import write_insightface_rec
    >>> from keras_insightface.data.sources import open_source
    >>> tmp = getfixture("tmp_path")
    >>> faces = [(simplejpeg.encode_jpeg(np.full((112, 112, 3), v, "uint8")), v // 100) for v in (50, 150)]
    >>> write_insightface_rec(tmp / "rec", faces, num_classes=2)
    >>> teacher = lambda images: np.asarray(images, "float32").mean(axis=(1, 2))  # (B, 3) "embeddings"
    >>> distill_data(tmp / "rec", teacher, tmp / "distilled.npz", batch_size=2, num_workers=0)  # doctest: +ELLIPSIS
    embedding ...: 2/2 images (100%), ... img/s
    '.../distilled.npz'
    >>> source = open_source(tmp / "distilled.npz")
    >>> source.embeddings.shape, source.labels.tolist()
    ((2, 3), [0, 1])
"""

import os
import time
from pathlib import Path

import grain
import numpy as np

from keras_insightface.errors import DataError

TEACHER_SUFFIXES = (".keras", ".h5", ".onnx", ".pt", ".pth")
AUTO = "auto"
ONNX_DTYPES = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32, "tensor(float16)": np.float16}


def _keras_teacher(path, input_mean, input_std):
    """Our ``.keras`` models and seed ``.h5`` files take RGB 0..255 and normalise inside."""
    from keras_insightface.saving import load_model

    if (input_mean, input_std) != (AUTO, AUTO):
        raise DataError(f"{path}: Keras models normalise inside; input_mean/input_std apply to .onnx and .pt teachers")
    model = load_model(path)
    return lambda images: np.asarray(model.predict_on_batch(np.asarray(images, "float32")), dtype=np.float32)


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


class OnnxTeacher:
    """An ONNX embedding model run by onnxruntime (CUDA when onnxruntime has it, else CPU)."""

    def __init__(self, path, input_mean=AUTO, input_std=AUTO):
        try:
            import onnx
            import onnxruntime
        except ImportError as error:
            raise DataError(
                f"{path}: ONNX teachers need onnxruntime and onnx ({error}); pip install keras_insightface[onnx]"
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
        self.path, self.size = path, shape[2:4] if self.channels_first else shape[1:3]
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
        if any(isinstance(n, int) and n != m for n, m in zip(self.size, images.shape[1:3])):
            raise DataError(f"{self.path}: the ONNX model takes {self.size} images, received {list(images.shape[1:3])}")
        if self.dtype == np.uint8:
            blob = np.clip(np.rint(images), 0, 255).astype(np.uint8)
        else:
            blob = ((images.astype(np.float32) - self.mean) / self.std).astype(self.dtype)
        if self.channels_first:
            blob = blob.transpose(0, 3, 1, 2)
        output = self._run(np.ascontiguousarray(blob))
        return np.asarray(output, dtype=np.float32).reshape(len(images), -1)


class TorchScriptTeacher:
    """A TorchScript embedding model fed NCHW float ``(x / 255 - 0.5) / 0.5`` (arcface_torch), on CUDA if present."""

    def __init__(self, path, input_mean=AUTO, input_std=AUTO):
        try:
            import torch
        except ImportError as error:
            raise DataError(
                f"{path}: TorchScript teachers need torch ({error}); pip install keras_insightface[compat]"
            ) from None
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.module = torch.jit.load(os.fspath(path), map_location=self.device).eval()
        except (RuntimeError, ValueError) as error:
            raise DataError(
                f"{path}: not a TorchScript module ({error}); save one with torch.jit.save(torch.jit.script(model))"
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


def load_teacher(path, input_mean=AUTO, input_std=AUTO):
    """A callable ``uint8 NHWC RGB batch -> float32 (B, D)`` for the model file at ``path``.

    ``input_mean`` / ``input_std`` override the ``(x - mean) / std`` of ``.onnx`` and ``.pt`` teachers
    (``"auto"``: the format's convention, see the module docstring).
    """
    suffix = Path(path).suffix.lower()
    if suffix not in TEACHER_SUFFIXES:
        raise DataError(
            f"{path}: unknown teacher format {suffix or '(no suffix)'!r}; expected one of {', '.join(TEACHER_SUFFIXES)}"
        )
    if not os.path.isfile(path):
        raise DataError(f"{path}: teacher model file does not exist")
    if suffix in (".keras", ".h5"):
        return _keras_teacher(path, input_mean, input_std)
    if suffix == ".onnx":
        return OnnxTeacher(path, input_mean, input_std)
    return TorchScriptTeacher(path, input_mean, input_std)


def iter_embeddings(
    source, teacher, batch_size=256, flip=False, num_workers=None, image_size=(112, 112), desc="embedding"
):
    """Yield ``(labels, L2-normalised float32 embeddings)`` for consecutive batches of ``source``, in order.

    Images are decoded by ``num_workers`` threads (the JPEG decoder releases the GIL; default: cores - 1);
    ``flip`` adds the embedding of the mirrored image before normalising. A corrupt image is a ``DataError``
    naming it. Prints ``count/total`` and images per second every 10 batches and at the end.
    """
    from keras_insightface.data.loader import _Decode, default_num_workers
    from keras_insightface.evaluation.verification import embed_images, l2_normalize

    if batch_size < 1:
        raise DataError(f"{getattr(source, 'name', 'source')}: batch_size must be positive, received {batch_size}")
    total = len(source)
    num_workers = default_num_workers() if num_workers is None else num_workers
    decode = _Decode(source=source, image_size=tuple(image_size), strict=True)
    decode.read(0)  # fails early on a bad first image, and opens the source's file handle before the threads start
    batches = grain.MapDataset.range(total).batch(batch_size, drop_remainder=False).map_with_index(decode)
    options = grain.ReadOptions(num_threads=num_workers, prefetch_buffer_size=2 * num_workers)
    done, start = 0, time.monotonic()
    for step, (images, labels, _) in enumerate(batches.to_iter_dataset(options), 1):
        embeddings = embed_images(teacher, images, batch_size, flip)
        if embeddings.ndim != 2 or len(embeddings) != len(images):
            raise DataError(f"{desc}: the teacher returned shape {embeddings.shape} for {len(images)} images")
        done += len(images)
        if step % 10 == 0 or done == total:
            rate = done / max(time.monotonic() - start, 1e-9)
            name = getattr(source, "name", "source")
            print(f"{desc} {name}: {done}/{total} images ({100 * done // total}%), {rate:.0f} img/s", flush=True)
        yield labels.astype(np.int64), l2_normalize(embeddings).astype(np.float32)


def npz_list_fields(source, indices, out_dir):
    """The npz keys naming records ``indices`` of ``source``: ``image_names`` relative to ``out_dir``, or
    ``rec_path`` (relative to ``out_dir``) and, unless all records are taken in order, ``image_indices``."""
    indices = np.asarray(indices, dtype=np.int64)
    inner = getattr(source, "source", None)
    if inner is not None and hasattr(source, "indices"):
        return npz_list_fields(inner, np.asarray(source.indices)[indices], out_dir)
    if hasattr(source, "rec_path"):
        fields = {"rec_path": np.asarray(os.path.relpath(source.rec_path, out_dir))}
        if not np.array_equal(indices, np.arange(len(source))):
            fields["image_indices"] = indices
        return fields
    if hasattr(source, "paths"):
        return {"image_names": np.asarray([os.path.relpath(source.paths[i], out_dir) for i in indices.tolist()])}
    name = getattr(source, "name", source)
    raise DataError(f"{name}: cannot name its records in an npz list (it has neither paths nor a rec_path)")


def save_npz(out_path, **arrays):
    """Write ``arrays`` to ``out_path`` (must end in ``.npz``) through a temporary file and a rename."""
    out_path = Path(out_path)
    if out_path.suffix != ".npz":
        raise DataError(f"{out_path}: output must be an .npz file")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)


def distill_data(data_path, teacher, out_path, batch_size=256, flip=False, num_workers=None, image_size=(112, 112)):
    """Embed every image of the dataset at ``data_path`` with ``teacher`` (a model path or a callable) and
    write ``out_path`` (an npz that ``open_source`` opens with ``embeddings``); returns ``out_path`` as a string."""
    from keras_insightface.data.sources import open_source

    source = open_source(data_path)
    if Path(out_path).suffix != ".npz":
        raise DataError(f"{out_path}: output must be an .npz file")
    if not callable(teacher):
        teacher = load_teacher(teacher)
    labels, embeddings = [], []
    for batch_labels, batch_embeddings in iter_embeddings(source, teacher, batch_size, flip, num_workers, image_size):
        labels.append(batch_labels)
        embeddings.append(batch_embeddings)
    fields = npz_list_fields(source, np.arange(len(source)), Path(out_path).parent)
    save_npz(out_path, **fields, image_classes=np.concatenate(labels), embeddings=np.concatenate(embeddings))
    return str(out_path)

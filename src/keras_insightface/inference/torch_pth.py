r"""Read ``torch.save`` files (``.pth`` / ``.pt`` state dicts and checkpoints) as numpy arrays, without PyTorch.

The format (torch 1.6 and later) is a zip whose entries share one folder ``<name>/``: ``data.pkl``, a pickle of
the saved object; ``data/<key>``, the raw bytes of each storage; ``byteorder`` (``little`` when absent). In the
pickle a storage is a persistent id ``("storage", torch.<Type>Storage, key, location, numel)`` and a tensor is
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])``.

The unpickler resolves only those globals, ``torch._utils._rebuild_parameter`` and ``collections.OrderedDict``,
each to a function of this module that builds numpy arrays; any other global (a class, ``os.system``, a
TorchScript module's code) is refused with an error naming the file and the global before anything runs, so
reading a file never executes code from it. Storages keep their dtype (``HalfStorage`` -> float16);
``BFloat16Storage`` becomes float32, which numpy can hold exactly.

Example:
    >>> import zipfile
    >>> path = getfixture("tmp_path") / "evil.pth"
    >>> with zipfile.ZipFile(path, "w") as archive:  # a pickle that would run os.system("echo hi")
    ...     archive.writestr("evil/data.pkl", b"cos\nsystem\n(S'echo hi'\ntR.")
    >>> load_state_dict(path)
    Traceback (most recent call last):
    ...
    keras_insightface.errors.DataError: ...evil.pth: refusing to unpickle the global os.system: ...
    >>> weights = load_state_dict("backbone.pth")    # doctest: +SKIP
    >>> weights["conv1.weight"].shape, weights["conv1.weight"].dtype    # doctest: +SKIP
    ((64, 3, 3, 3), dtype('float32'))
"""

import collections
import io
import pickle
import re
import types
import zipfile

import numpy as np

from keras_insightface.errors import DataError

# torch's storage class name -> numpy dtype of its bytes (little-endian unless the file's byteorder says big)
STORAGE_DTYPES = types.MappingProxyType({
    "FloatStorage": "f4", "HalfStorage": "f2", "BFloat16Storage": "u2", "DoubleStorage": "f8",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1", "ByteStorage": "u1",
    "BoolStorage": "?",
})
# keys under which training scripts store the model's state dict inside a checkpoint dict, tried in this order
CHECKPOINT_KEYS = ("state_dict_backbone", "state_dict", "model_state_dict", "model", "backbone")
# prefixes wrappers add to every key: DistributedDataParallel / DataParallel, torch.compile
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
TORCHSCRIPT_ENTRIES = ("constants.pkl", "code/")  # what torch.jit.save writes and torch.save does not
_KEY = re.compile(r"^[A-Za-z0-9_.]+$")


class StorageType(collections.namedtuple("StorageType", "name dtype")):
    """What the pickle's ``torch.<name>`` storage global resolves to: the storage's element type."""


class Storage(collections.namedtuple("Storage", "key array")):
    """One storage of the file: its flat array of elements."""


def _bfloat16_to_float32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


class _TorchUnpickler(pickle.Unpickler):
    """Unpickler of a ``data.pkl`` that builds numpy arrays from the archive's storages and nothing else."""

    def __init__(self, file, archive, prefix, path, byteorder):
        super().__init__(file)
        self._archive, self._prefix, self._path, self._byteorder = archive, prefix, path, byteorder
        self._storages = {}

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return self._rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return self._rebuild_parameter
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(name, STORAGE_DTYPES[name])
        raise DataError(
            f"{self._path}: refusing to unpickle the global {module}.{name}: a weights file may only hold tensors "
            "in dicts, lists and numbers (a TorchScript module or a pickled object is not read here; save its "
            "state_dict() instead)"
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise DataError(f"{self._path}: unexpected persistent id {str(pid)[:80]!r}, expected a torch storage")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, StorageType):
            raise DataError(f"{self._path}: storage {key!r} has type {storage_type!r}, not a torch storage type")
        if not (isinstance(key, str) and _KEY.match(key)) or not (isinstance(numel, int) and numel >= 0):
            raise DataError(f"{self._path}: malformed storage id (key {key!r}, {numel!r} elements)")
        if key not in self._storages:
            self._storages[key] = Storage(key, self._read_storage(key, storage_type, numel))
        return self._storages[key]

    def _read_storage(self, key, storage_type, numel):
        entry = f"{self._prefix}data/{key}"
        try:
            raw = self._archive.read(entry)
        except KeyError:
            raise DataError(f"{self._path}: storage {entry} is missing from the archive") from None
        dtype = np.dtype(storage_type.dtype).newbyteorder("<" if self._byteorder == "little" else ">")
        if len(raw) != numel * dtype.itemsize:
            raise DataError(
                f"{self._path}: storage {entry} holds {len(raw)} bytes, {storage_type.name} of {numel} elements "
                f"needs {numel * dtype.itemsize}"
            )
        array = np.frombuffer(raw, dtype).astype(dtype.newbyteorder("="))
        return _bfloat16_to_float32(array) if storage_type.name == "BFloat16Storage" else array

    def _rebuild_tensor(self, storage, offset, size, stride, *_):
        """``_rebuild_tensor_v2``: a copy of the strided view of ``storage`` (requires_grad / hooks dropped)."""
        if not isinstance(storage, Storage):
            raise DataError(f"{self._path}: a tensor refers to {type(storage).__name__}, not a storage")
        if not (isinstance(offset, int) and offset >= 0 and isinstance(size, tuple) and isinstance(stride, tuple)
                and len(size) == len(stride) and all(isinstance(n, int) and n >= 0 for n in size + stride)):
            raise DataError(f"{self._path}: malformed tensor (offset {offset!r}, size {size!r}, stride {stride!r}) "
                            f"in storage {storage.key}")
        flat = storage.array
        if 0 in size:
            return np.zeros(size, flat.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise DataError(f"{self._path}: tensor of size {size} at offset {offset} (stride {stride}) reads past "
                            f"the {flat.size} elements of storage {storage.key}")
        view = np.lib.stride_tricks.as_strided(
            flat[offset:], shape=size, strides=[s * flat.itemsize for s in stride], writeable=False
        )
        return np.array(view)

    def _rebuild_parameter(self, data, *_):
        return data


def _archive_prefix(archive, path):
    names = [name for name in archive.namelist() if name.endswith("data.pkl") and name.count("/") == 1]
    if len(names) != 1:
        raise DataError(f"{path}: not a torch.save archive: expected one <name>/data.pkl entry, found {len(names)}")
    return names[0][: -len("data.pkl")]


def is_weights_archive(path):
    """Whether ``path`` is a ``torch.save`` zip (one ``<name>/data.pkl``) and not a TorchScript module (whose zip
    also holds ``code/`` and ``constants.pkl``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            prefix = _archive_prefix(archive, path)
            return not any(name.startswith(prefix + entry) for name in archive.namelist()
                           for entry in TORCHSCRIPT_ENTRIES)
    except (zipfile.BadZipFile, OSError, DataError):
        return False


def _looks_legacy(path):
    with open(path, "rb") as f:
        head = f.read(2)
    return head == b"\x80\x02"  # a bare protocol-2 pickle: torch's format before 1.6


def load_torch_file(path):
    """The object a ``torch.save`` zip holds, with every tensor as a numpy array (dicts, lists, numbers kept)."""
    path = str(path)
    try:
        archive = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a .pth file") from None
    except zipfile.BadZipFile as error:
        if _looks_legacy(path):
            raise DataError(f"{path}: written in torch's format from before 1.6, which is not read here; load it "
                            "with torch and save it again (torch.save writes the zip format)") from None
        raise DataError(f"{path}: not a torch.save zip archive, or truncated ({error})") from None
    with archive:
        prefix = _archive_prefix(archive, path)
        try:
            byteorder = archive.read(prefix + "byteorder").decode().strip()
        except KeyError:
            byteorder = "little"
        if byteorder not in ("little", "big"):
            raise DataError(f"{path}: unknown byteorder {byteorder!r}")
        try:
            payload = archive.read(prefix + "data.pkl")
            return _TorchUnpickler(io.BytesIO(payload), archive, prefix, path, byteorder).load()
        except DataError:
            raise
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, TypeError, OSError) as error:
            raise DataError(f"{path}: unreadable torch archive ({type(error).__name__}: {error})") from None


def _is_state_dict(value):
    return isinstance(value, dict) and value and all(
        isinstance(k, str) and isinstance(v, np.ndarray) for k, v in value.items()
    )


def _strip_prefixes(state):
    for prefix in WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state):
            state = collections.OrderedDict((key[len(prefix):], value) for key, value in state.items())
    return state


def load_state_dict(path):
    """The model state dict of a ``torch.save`` file: ``{name: numpy array}`` in the file's order.

    The file may hold the state dict itself or a checkpoint dict with it under one of ``CHECKPOINT_KEYS``
    (arcface_torch's ``checkpoint_gpu_0.pt`` keeps the backbone's under ``state_dict_backbone``). A
    ``module.`` prefix on every key (DataParallel / DistributedDataParallel) or ``_orig_mod.`` (torch.compile)
    is removed.
    """
    content = load_torch_file(path)
    if _is_state_dict(content):
        return _strip_prefixes(collections.OrderedDict(content))
    if isinstance(content, dict):
        for key in CHECKPOINT_KEYS:
            if _is_state_dict(content.get(key)):
                return _strip_prefixes(collections.OrderedDict(content[key]))
        keys = ", ".join(repr(k) for k in list(content)[:12])
        raise DataError(f"{path}: a dict without a state dict of tensors; expected tensors, or one under "
                        f"{', '.join(CHECKPOINT_KEYS)}; its keys: {keys}")
    raise DataError(f"{path}: holds a {type(content).__name__}, expected a state dict (name -> tensor)")

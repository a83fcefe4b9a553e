"""Verification packs (``lfw.bin``, ``cfp_fp.bin``, ...): a pickle of ``(bins, issame_list)``.

``bins`` holds 2*P encoded JPEG images (bytes, or uint8 numpy arrays of the bytes); pair ``i`` is images
``2i`` and ``2i + 1`` and ``issame_list[i]`` says whether they show the same person. Packs come from the
internet, so they are read with an unpickler that only builds lists, tuples, bytes, bools and numpy arrays.

``build_bin`` makes a pack from any labelled source, laid out for insightface's evaluation: the 10 contiguous
folds that scikit-learn's ``KFold(n_splits=10)`` cuts from the pairs (``kfold_sizes``), each holding as many
genuine as impostor pairs (one more of a kind in some folds when the sizes are odd), random pairs or, given
embeddings, the hardest ones.

Example:
    >>> from keras_insightface.data.binpack import make_pairs
    >>> pairs, issame = make_pairs([0, 0, 1, 1, 2, 2], num_pairs=10)
    Traceback (most recent call last):
    ...
    keras_insightface.errors.DataError: make_pairs: only 3 distinct genuine pairs, 10 needed
    >>> pairs, issame = make_pairs([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3], num_pairs=10)
    >>> pairs.shape, int(issame.sum())
    ((20, 2), 10)
    >>> images, issame = load_bin("lfw.bin")    # doctest: +SKIP
"""

import importlib
import pickle
from pathlib import Path

import numpy as np

from keras_insightface.atomic import atomic_path
from keras_insightface.data.decode import decode_image, is_jpeg
from keras_insightface.data.outputs import refuse_existing
from keras_insightface.data.progress import progress_bar
from keras_insightface.errors import DataError

_NUMPY_TOP = frozenset({"ndarray", "dtype"})
_MULTIARRAY_MODULES = frozenset({"numpy.core.multiarray", "numpy._core.multiarray"})
_MULTIARRAY_NAMES = frozenset({"_reconstruct", "scalar"})


def _multiarray():
    """numpy's multiarray module, under its numpy 2 name when present (no deprecated ``numpy.core`` import)."""
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:
        return importlib.import_module("numpy.core.multiarray")


def _latin1_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, limited to latin1."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode only allowed on str with latin1, got {encoding!r}")
    return text.encode("latin1", errors)


class _PackUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a pickled numpy array needs."""

    def __init__(self, file, path):
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module, name):
        if module == "numpy" and name in _NUMPY_TOP:
            return getattr(np, name)
        if module in _MULTIARRAY_MODULES and name in _MULTIARRAY_NAMES:
            return getattr(_multiarray(), name)
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        raise DataError(
            f"{self._path}: refusing to unpickle {module}.{name}: "
            "a .bin pack may only hold lists, tuples, bytes, bools and numpy arrays"
        )


def _is_bool_like(value):
    return isinstance(value, (bool, np.bool_)) or (
        isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in (0, 1)
    )


def _validate(path, bins, issame):
    """Check the pack structure; return (list of bytes, bool array)."""
    if isinstance(issame, np.ndarray):
        issame = issame.tolist()
    if not isinstance(bins, (list, tuple)):
        raise DataError(f"{path}: images must be a list or tuple, got {type(bins).__name__}")
    if not isinstance(issame, (list, tuple)):
        raise DataError(f"{path}: issame_list must be a list or tuple, got {type(issame).__name__}")
    images = []
    for i, entry in enumerate(bins):
        if isinstance(entry, (bytes, bytearray)):
            images.append(bytes(entry))
        elif isinstance(entry, np.ndarray) and entry.dtype == np.uint8:
            images.append(entry.tobytes())
        else:
            kind = f"numpy {entry.dtype} array" if isinstance(entry, np.ndarray) else type(entry).__name__
            raise DataError(f"{path}: image entry {i} is {kind}, expected bytes or a uint8 numpy array")
    for i, value in enumerate(issame):
        if not _is_bool_like(value):
            raise DataError(f"{path}: issame entry {i} is {type(value).__name__}, expected a bool")
    if len(images) != 2 * len(issame):
        raise DataError(f"{path}: {len(images)} images for {len(issame)} pairs, expected {2 * len(issame)}")
    return images, np.array([bool(v) for v in issame], dtype=bool)


def load_bin(path):
    """Load a verification pack safely: returns (list of JPEG bytes, bool array of pair labels)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = _PackUnpickler(f, path).load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a .bin pack") from None
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        kind = type(data).__name__
        if isinstance(data, (list, tuple)):
            kind += f" of length {len(data)}"
        raise DataError(f"{path}: expected a 2-element (bins, issame_list) tuple, got {kind}")
    return _validate(path, data[0], data[1])


def write_bin(path, images, issame):
    """Write a pack (protocol 4, bytes entries, python bools) atomically: temp file, then rename."""
    path = Path(path)
    images, issame = _validate(path, list(images), list(issame))
    payload = (images, [bool(v) for v in issame])
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        pickle.dump(payload, f, protocol=4)


def decode_bin_images(images, path=""):
    """Decode pack images to one uint8 RGB array (N, H, W, 3); all images must share one size."""
    where = f"{path}: " if path else ""
    out = None
    for i, data in enumerate(images):
        image = decode_image(data, None, where=f"{where}image {i}")
        if out is None:
            out = np.empty((len(images),) + image.shape, dtype=np.uint8)
        elif image.shape != out.shape[1:]:
            raise DataError(f"{where}image {i} has shape {image.shape}, expected {out.shape[1:]} like image 0")
        out[i] = image
    if out is None:
        return np.empty((0, 0, 0, 3), dtype=np.uint8)
    return out


NUM_FOLDS = 10  # insightface's verification: 10-fold accuracy, each fold's threshold chosen on the other nine
MIN_PAIRS = NUM_FOLDS  # genuine pairs (and as many impostor): one of each kind in every fold of the 2 x 10


def kfold_sizes(count, n_folds=NUM_FOLDS):
    """Sizes of the contiguous folds scikit-learn's ``KFold(n_splits=n_folds)`` (no shuffle) cuts from ``count``
    items: ``count // n_folds`` each, one more in the first ``count % n_folds`` (insightface's verification folds).

    Example:
        >>> kfold_sizes(22).tolist()
        [3, 3, 2, 2, 2, 2, 2, 2, 2, 2]
    """
    sizes = np.full(n_folds, count // n_folds, dtype=np.int64)
    sizes[: count % n_folds] += 1
    return sizes


def _genuine_per_fold(fold_sizes):
    """Genuine pairs of each fold: half of it, the odd folds taking the extra pair in turns, so the genuine and
    the impostor totals are equal (the odd folds are an even number, as the sizes add up to twice the pairs)."""
    genuine = fold_sizes // 2
    odd = np.flatnonzero(fold_sizes % 2)
    genuine[odd[::2]] += 1
    return genuine


def _split_ranks(counts, ranks):
    """Map ranks in ``[0, counts.sum())`` to (row, offset in row), row ``r`` owning ``counts[r]`` ranks."""
    ends = np.cumsum(counts)
    rows = np.searchsorted(ends, ranks, side="right")
    return rows, ranks - (ends[rows] - counts[rows])


def _random_genuine(members, num_pairs, rng):
    """Distinct same-identity pairs, identities drawn uniformly (capped by their own pair counts)."""
    sizes = np.array([m.size for m in members], dtype=np.int64)
    capacity = sizes * (sizes - 1) // 2
    quota = np.zeros_like(capacity)
    while quota.sum() < num_pairs:
        open_ = np.flatnonzero(quota < capacity)
        drawn = np.bincount(rng.choice(open_, num_pairs - quota.sum()), minlength=capacity.size)
        quota = np.minimum(quota + drawn, capacity)
    pairs = []
    for c in np.flatnonzero(quota).tolist():
        n = sizes[c]
        first, offset = _split_ranks(np.arange(n - 1, -1, -1), rng.choice(capacity[c], quota[c], replace=False))
        pairs.append(np.stack([members[c][first], members[c][first + 1 + offset]], axis=1))
    return np.concatenate(pairs)


def _random_impostors(order, class_end, num_pairs, rng):
    """Distinct different-identity pairs, uniform over all of them (positions sorted by label)."""
    counts = order.size - class_end
    first, offset = _split_ranks(counts, rng.choice(int(counts.sum()), num_pairs, replace=False))
    return np.stack([order[first], order[class_end[first] + offset]], axis=1)


def _keep_extreme(scores, pairs, count, largest):
    """The ``count`` lowest (or largest) scores and their pairs, ties broken by pair order."""
    key = -scores if largest else scores
    keep = np.lexsort((pairs[:, 1], pairs[:, 0], key))[:count]
    return scores[keep], pairs[keep]


def _hardest_genuine(members, unit, num_pairs):
    """The least cosine-similar same-identity pairs."""
    scores, pairs = np.empty(0, dtype=unit.dtype), np.empty((0, 2), dtype=np.int64)
    for m in members:
        i, j = np.triu_indices(m.size, 1)
        sims = (unit[m] @ unit[m].T)[i, j]
        scores = np.concatenate([scores, sims])
        pairs = np.concatenate([pairs, np.stack([m[i], m[j]], axis=1)])
        if scores.size > 4 * num_pairs:
            scores, pairs = _keep_extreme(scores, pairs, num_pairs, largest=False)
    return _keep_extreme(scores, pairs, num_pairs, largest=False)[1]


def _hardest_impostors(order, class_end, unit, num_pairs, block_elements=1 << 22):
    """The most cosine-similar different-identity pairs, by blocks of rows of the similarity matrix."""
    scores, pairs = np.empty(0, dtype=unit.dtype), np.empty((0, 2), dtype=np.int64)
    sorted_unit = unit[order]
    rows = max(1, block_elements // order.size)
    columns = np.arange(order.size)
    for start in range(0, order.size, rows):
        sims = sorted_unit[start : start + rows] @ sorted_unit.T
        valid = columns[None, :] >= class_end[start : start + rows, None]
        first, second = np.nonzero(valid)
        block_scores = sims[first, second]
        if block_scores.size > num_pairs:
            top = np.argpartition(-block_scores, num_pairs - 1)[:num_pairs]
            first, second, block_scores = first[top], second[top], block_scores[top]
        scores = np.concatenate([scores, block_scores])
        pairs = np.concatenate([pairs, np.stack([order[start + first], order[second]], axis=1)])
        if scores.size > 4 * num_pairs:
            scores, pairs = _keep_extreme(scores, pairs, num_pairs, largest=True)
    return _keep_extreme(scores, pairs, num_pairs, largest=True)[1]


def make_pairs(labels, num_pairs, seed=0, embeddings=None, hardest=False):
    """``num_pairs`` genuine and ``num_pairs`` impostor image-index pairs in insightface's 10-fold layout.

    Returns ``(pairs, issame)``: an int64 ``(2 * num_pairs, 2)`` array of indices into ``labels`` and a bool
    ``(2 * num_pairs,)`` array. The pairs fall into the 10 folds ``KFold(n_splits=10)`` makes of ``2 * num_pairs``
    (``kfold_sizes``), each holding its genuine pairs then its impostor pairs, half and half (a fold of odd size
    has one more of a kind, in turns). ``num_pairs`` is any number from ``MIN_PAIRS`` (10), so that every fold
    holds both kinds. No pair appears twice. By default pairs are random
    (genuine: identities drawn uniformly; impostors: uniform over all different-identity pairs). With
    ``embeddings`` (N, D) and ``hardest=True``: the least cosine-similar genuine pairs and the most similar
    impostor pairs, spread over the folds at random.

    Example:
        >>> pairs, issame = make_pairs(np.repeat(np.arange(5), 4), num_pairs=20, seed=1)
        >>> issame[:2].tolist(), issame[2:4].tolist()
        ([True, True], [False, False])
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        raise DataError(f"make_pairs: labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    num_pairs = int(num_pairs)
    if num_pairs < MIN_PAIRS:
        raise DataError(
            f"make_pairs: num_pairs must be at least {MIN_PAIRS}, got {num_pairs}: each of the {NUM_FOLDS} folds "
            "needs a genuine and an impostor pair"
        )
    if hardest and embeddings is None:
        raise DataError("make_pairs: hardest=True needs embeddings")
    if embeddings is not None and not hardest:
        raise DataError("make_pairs: embeddings are only used with hardest=True")
    order = np.argsort(labels, kind="stable")
    _, starts, sizes = np.unique(labels[order], return_index=True, return_counts=True)
    members = [order[a : a + n] for a, n in zip(starts.tolist(), sizes.tolist()) if n >= 2]
    if len(members) < 2:
        raise DataError(f"make_pairs: {len(members)} identities have 2 or more images, at least 2 are needed")
    genuine_total = sum(m.size * (m.size - 1) // 2 for m in members)
    class_end = np.repeat(starts + sizes, sizes)
    impostor_total = int((order.size - class_end).sum())
    for kind, total in (("genuine", genuine_total), ("impostor", impostor_total)):
        if total < num_pairs:
            raise DataError(f"make_pairs: only {total} distinct {kind} pairs, {num_pairs} needed")
    rng = np.random.default_rng(seed)
    if hardest:
        unit = np.asarray(embeddings, dtype=np.float32)
        if unit.ndim != 2 or unit.shape[0] != labels.size:
            raise DataError(f"make_pairs: embeddings have shape {unit.shape}, expected ({labels.size}, D)")
        norms = np.linalg.norm(unit, axis=1, keepdims=True)
        if not np.all(norms > 0) or not np.all(np.isfinite(norms)):
            raise DataError("make_pairs: embeddings hold a zero or non-finite row")
        unit = unit / norms
        genuine = _hardest_genuine(members, unit, num_pairs)
        impostor = _hardest_impostors(order, class_end, unit, num_pairs)
    else:
        genuine = _random_genuine(members, num_pairs, rng)
        impostor = _random_impostors(order, class_end, num_pairs, rng)
    sizes = kfold_sizes(2 * num_pairs)
    genuine_counts = _genuine_per_fold(sizes)
    cuts = [np.cumsum(counts)[:-1] for counts in (genuine_counts, sizes - genuine_counts)]
    genuine_folds = np.split(rng.permutation(genuine), cuts[0])
    impostor_folds = np.split(rng.permutation(impostor), cuts[1])
    pairs = np.concatenate([part for folds in zip(genuine_folds, impostor_folds) for part in folds])
    issame = np.concatenate([np.repeat([True, False], [g, n - g]) for g, n in zip(genuine_counts, sizes)])
    return pairs.astype(np.int64), issame


def build_bin(source, out_path, num_pairs, seed=0, embeddings=None, hardest=False, overwrite=False):
    """Write a verification pack of ``make_pairs`` pairs from ``source``; returns ``(pairs, issame)``.

    ``source`` is random access: ``len``, ``source[i] -> (jpeg_bytes, label)`` and a ``labels`` array
    (as ``open_source`` gives). Each image is read once even when it is in several pairs; images must be
    JPEG, as packs hold JPEG bytes. An existing ``out_path`` is replaced only with ``overwrite``.

    Example:
        >>> from keras_insightface.data.sources import open_source
        >>> build_bin(open_source("faces/val"), "val.bin", num_pairs=3000)    # doctest: +SKIP
    """
    name = getattr(source, "name", type(source).__name__)
    labels = np.asarray(source.labels)
    if labels.shape != (len(source),):
        raise DataError(f"{name}: {labels.shape} labels for {len(source)} images")
    try:
        pairs, issame = make_pairs(labels, num_pairs, seed=seed, embeddings=embeddings, hardest=hardest)
    except DataError as error:
        raise DataError(f"{name} -> {out_path}: {error}") from None
    refuse_existing(out_path, overwrite)
    describe = getattr(source, "describe", None)
    images = {}
    needed = np.unique(pairs).tolist()
    with progress_bar(len(needed), f"reading {name}") as advance:
        for i in needed:
            data, label = source[i]
            where = describe(i) if describe else f"{name}: image {i}"
            if int(label) != labels[i]:
                raise DataError(f"{where}: label {label} differs from the source labels ({labels[i]})")
            data = bytes(data)
            if not is_jpeg(data):
                raise DataError(f"{where}: not a JPEG; .bin packs hold JPEG bytes")
            images[i] = data
            advance()
    write_bin(out_path, [images[i] for i in pairs.ravel().tolist()], issame)
    return pairs, issame

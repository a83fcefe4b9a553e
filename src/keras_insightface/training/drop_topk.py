"""Sub-center cleaning: drop the images far from their class's dominant sub-center (sub-center ArcFace).

A ``NormDense`` head trained with ``loss_top_k = K > 1`` holds K sub-centers per class: its kernel is
``(embedding, classes * K)`` and class ``c``'s sub-centers are columns ``c * K .. c * K + K - 1`` (the layer
reshapes its cosines to ``(classes, K)``). For each class, the dominant sub-center is the one most of the
class's images are closest to (ties: the lowest index, as the seed's ``data_drop_top_k.py``); images whose
angle to it is at most ``limit_deg`` are kept, the others (mostly label noise) dropped.

Example:
    >>> import numpy as np
    >>> kernel = np.array([[1.0, 0.0], [0.0, 1.0]])   # one class, two sub-centers: the x and the y axis
    >>> deg = np.radians([0, 10, 40, 80, 100])
    >>> embeddings = np.stack([np.cos(deg), np.sin(deg)], axis=1)  # 3 images nearest x: x dominates
    >>> drop_topk(embeddings, np.zeros(5, int), kernel, top_k=2, limit_deg=75).tolist()
    [0, 1, 2]
"""

import os
from pathlib import Path

import numpy as np

from keras_insightface.data.npz_list import npz_list_fields, save_npz
from keras_insightface.data.sources import open_source
from keras_insightface.errors import DataError
from keras_insightface.inference.embed import iter_embeddings
from keras_insightface.inference.embedders import open_model
from keras_insightface.training.checkpoint import latest_state_dir, read_variable

KERNEL_VARIABLE = "norm_dense/norm_dense_w"


def check_kernel(kernel, top_k, where="kernel"):
    """``kernel`` as float32 (D, classes * top_k); a ``DataError`` naming ``where`` when it cannot be."""
    kernel = np.asarray(kernel, dtype=np.float32)
    if int(top_k) < 1:
        raise DataError(f"{where}: top_k must be at least 1, received {top_k}")
    if kernel.ndim != 2 or kernel.shape[1] == 0:
        raise DataError(f"{where}: a NormDense kernel is 2-D (embedding, classes * top_k), received {kernel.shape}")
    if kernel.shape[1] % int(top_k):
        raise DataError(f"{where}: kernel has {kernel.shape[1]} columns, not a multiple of top_k={top_k}")
    return kernel


def class_subcenters(kernel, top_k):
    """The unit sub-centers as (classes, top_k, embedding): ``[c, k]`` is kernel column ``c * top_k + k``."""
    kernel = check_kernel(kernel, top_k)
    centers = kernel / np.maximum(np.linalg.norm(kernel, axis=0, keepdims=True), 1e-12)
    return np.ascontiguousarray(centers.T.reshape(kernel.shape[1] // top_k, top_k, kernel.shape[0]))


def subcenter_cosines(embeddings, labels, centers, chunk=8192):
    """(N, top_k) cosines of each embedding to the sub-centers of its own class (``centers``: class_subcenters)."""
    embeddings, labels = np.asarray(embeddings, dtype=np.float32), np.asarray(labels, dtype=np.int64)
    num_classes, top_k, dims = centers.shape
    if embeddings.ndim != 2 or embeddings.shape[1] != dims:
        raise DataError(f"embeddings of shape {embeddings.shape} do not fit sub-centers of {dims} dimensions")
    if len(labels) != len(embeddings):
        raise DataError(f"{len(labels)} labels for {len(embeddings)} embeddings")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels span {labels.min()}..{labels.max()}, the kernel holds classes 0..{num_classes - 1}")
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    out = np.empty((len(unit), top_k), dtype=np.float32)
    for start in range(0, len(unit), chunk):
        stop = start + chunk
        out[start:stop] = np.einsum("nkd,nd->nk", centers[labels[start:stop]], unit[start:stop])
    return out


def keep_by_dominant(cosines, labels, limit_deg=75):
    """Indices (ascending) of the images within ``limit_deg`` of their class's dominant sub-center."""
    cosines, labels = np.asarray(cosines), np.asarray(labels, dtype=np.int64)
    top_k = cosines.shape[1]
    nearest = np.argmax(cosines, axis=1)
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    votes = np.bincount(labels * top_k + nearest, minlength=num_classes * top_k).reshape(num_classes, top_k)
    dominant = np.argmax(votes, axis=1)
    to_dominant = cosines[np.arange(len(labels)), dominant[labels]]
    angles = np.degrees(np.arccos(np.clip(to_dominant, -1.0, 1.0)))
    return np.flatnonzero(angles <= limit_deg)


def drop_topk(embeddings, labels, kernel, top_k, limit_deg=75):
    """Indices of the images to keep: within ``limit_deg`` degrees of their class's dominant sub-center."""
    return keep_by_dominant(subcenter_cosines(embeddings, labels, class_subcenters(kernel, top_k)), labels, limit_deg)


def load_kernel(path):
    """A NormDense kernel from a ``.npy`` file or a run's full-state checkpoint folder (``<name>_state/``)."""
    path = os.fspath(path)
    if path.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read the kernel ({error})") from None
    directory = latest_state_dir(path.rstrip("/"))  # also a checkpoint whose swap was interrupted (<dir>.old)
    if directory is None:
        raise DataError(f"{path}: neither a .npy kernel nor a <name>_state checkpoint folder (no state.json)")
    return read_variable(directory, KERNEL_VARIABLE)


def drop_topk_data(data_path, model, kernel, top_k, out_path, limit_deg=75, batch_size=256, num_workers=None):
    """Embed the dataset with ``model`` (a model file or object, ``open_model``), keep the images within ``limit_deg``
    of their dominant sub-center and write them to ``out_path`` as an npz list (empty classes dropped, labels
    renumbered 0..C-1 in their old order). ``kernel``: an array, a ``.npy`` path or a checkpoint folder.

    Returns ``{"images": (kept, total), "classes": (kept, total)}`` and prints what was dropped.
    """
    is_path = isinstance(kernel, (str, os.PathLike))
    where = os.fspath(kernel) if is_path else "kernel"
    centers = class_subcenters(check_kernel(load_kernel(kernel) if is_path else kernel, top_k, where), top_k)
    num_classes = len(centers)
    source = open_source(data_path)
    data_name = os.fspath(data_path) if isinstance(data_path, (str, os.PathLike)) else source.name
    if Path(out_path).suffix != ".npz":
        raise DataError(f"{out_path}: output must be an .npz file")
    if source.num_classes != num_classes:
        raise DataError(
            f"{data_name}: {source.num_classes} classes, but {where} holds {num_classes} "
            f"(kernel columns / top_k {top_k}): use the dataset the head was trained on"
        )
    model = open_model(model)
    labels, cosines = [], []
    for batch_labels, embeddings in iter_embeddings(source, model, batch_size, False, num_workers, desc="drop-topk"):
        labels.append(batch_labels)
        cosines.append(subcenter_cosines(embeddings, batch_labels, centers))
    labels = np.concatenate(labels)
    kept = keep_by_dominant(np.concatenate(cosines), labels, limit_deg)
    if len(kept) == 0:
        raise DataError(f"{data_name}: no image is within {limit_deg} degrees of its dominant sub-center")
    old_classes = np.unique(labels[kept])
    new_labels = np.searchsorted(old_classes, labels[kept])
    save_npz(out_path, **npz_list_fields(source, kept, Path(out_path).parent), image_classes=new_labels)
    total_classes = len(np.unique(labels))
    print(
        f"drop-topk: kept {len(kept)} of {len(labels)} images ({len(labels) - len(kept)} dropped) and "
        f"{len(old_classes)} of {total_classes} classes ({total_classes - len(old_classes)} dropped) -> {out_path}"
    )
    return {"images": (len(kept), len(labels)), "classes": (len(old_classes), total_classes)}

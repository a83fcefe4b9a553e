"""The one embedding loop: batches of uint8 faces -> embeddings of each view (the image, and its mirror with
``flip``), every batch padded to a fixed size so a compiled model is traced once.

``embed_batches`` is the loop; the rest feed it: arrays in memory (``embed_views``, ``embed_images``,
``embed_faces``: verification packs, compare, search), a dataset in order (``iter_embeddings``: folder
evaluation, distill-data, drop-topk) and image files aligned by their landmarks (``embed_files``: IJB).

Example:
    >>> import numpy as np
    >>> model = lambda images: np.asarray(images, "float32")[:, 0, :2, 0]   # (B, 2): the first two pixels
    >>> images = np.zeros((3, 4, 4, 3), "uint8"); images[:, 0, 0] = 1
    >>> [view.tolist() for view in embed_views(model, images, batch_size=2, flip=True)]
    [[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]
"""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from keras_insightface.data.progress import make_progbar
from keras_insightface.errors import DataError
from keras_insightface.inference.embedders import open_model



def l2_normalize(x):
    """Rows of ``x`` divided by their L2 norm, in ``x``'s float dtype, as ``sklearn.preprocessing.normalize``
    (the norm is ``sqrt(einsum("ij,ij->i"))``; a zero row stays zero), which insightface's and the seed's
    evaluations call: verification numbers then equal theirs to the last bit."""
    x = np.asarray(x)
    x = x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.where(norms < 10 * np.finfo(x.dtype).eps, 1, norms)[:, None]


def check_batch_size(batch_size, desc=None):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise DataError(f"{desc or 'embedding'}: batch_size must be positive, received {batch_size}")


def embed_batches(model, batches, batch_size, flip=False, desc=None, total=None):
    """Yield, for each uint8 NHWC batch of ``batches`` (at most ``batch_size`` images), the list of its float32
    views: ``[embeddings]``, plus ``[mirrored-image embeddings]`` with ``flip``.

    ``model`` is anything ``open_model`` takes. With ``desc``, shows the progress in images with the rate
    (``data.progress.make_progbar``). A model that does not return one row per image is a
    ``DataError`` naming ``desc``.
    """
    embedder = open_model(model)
    check_batch_size(batch_size, desc)
    done, start = 0, time.monotonic()
    bar = make_progbar(total, "image", desc, stateful_metrics=["img/s"]) if desc is not None else None

    def run(images):
        views = embedder.views(images, flip)
        for output in views:
            if output.ndim != 2 or len(output) != batch_size:
                raise DataError(f"{desc or 'embedding'}: the model returned shape {output.shape} for {batch_size} "
                                "images")
        return views

    for images in batches:
        count = len(images)
        if count < batch_size:
            images = np.concatenate([images, np.zeros((batch_size - count, *images.shape[1:]), images.dtype)])
        views = [view[:count] for view in run(images)]
        done += count
        if bar is not None:
            rate = done / max(time.monotonic() - start, 1e-9)
            bar.update(done, [("img/s", round(rate))], finalize=bool(total) and done >= total)
        yield views


def embed_views(model, images, batch_size=64, flip=True):
    """Un-normalised embeddings of uint8 NHWC ``images``: ``[image views]``, plus ``[mirrored views]`` with ``flip``."""
    check_batch_size(batch_size)
    batches = (images[start : start + batch_size] for start in range(0, len(images), batch_size))
    parts = list(embed_batches(model, batches, batch_size, flip))
    if not parts:
        raise DataError("embedding: no images")
    return [np.concatenate(view) for view in zip(*parts)]


def embed_images(model, images, batch_size=64, flip=True):
    """Embeddings of uint8 NHWC ``images``; with ``flip`` the embedding of the mirrored face is added."""
    return sum(embed_views(model, images, batch_size, flip))


def embed_faces(model, faces, batch_size=64):
    """L2-normalised embeddings (float32, one row per face) of aligned uint8 ``faces``, each the sum of the
    face's and its mirror image's embeddings, as verification scores pairs."""
    faces = np.asarray(faces)
    batch_size = max(1, min(batch_size, len(faces)))
    return l2_normalize(embed_images(model, faces, batch_size, flip=True)).astype(np.float32)


def iter_embeddings(source, model, batch_size=256, flip=False, num_workers=None, image_size=(112, 112),
                    desc="embedding", strict=True):
    """Yield ``(labels, L2-normalised float32 embeddings)`` for consecutive batches of the dataset ``source``
    (``data.sources.open_source``), in order.

    Images are decoded by ``num_workers`` threads (default: cores - 1); ``flip`` adds the embedding of the
    mirrored image before normalising. A corrupt image is a ``DataError`` naming it (``strict=False``: replaced
    by the next readable one, as in training).
    """
    from keras_insightface.data.loader import ordered_batches

    batches = ordered_batches(source, batch_size, num_workers, image_size, strict)
    labels = []

    def images():
        for batch_images, batch_labels in batches:
            labels.append(batch_labels)
            yield batch_images

    name = f"{desc} {getattr(source, 'name', 'source')}" if desc is not None else None  # None: no progress lines
    for views in embed_batches(model, images(), batch_size, flip, desc=name, total=len(source)):
        yield labels.pop(0).astype(np.int64), l2_normalize(sum(views)).astype(np.float32)


def embed_files(model, image_paths, landmarks, batch_size=64, flip=True, align=None, num_threads=None,
                desc="embedding"):
    """``(embeddings, flip_embeddings or None)`` float32 (N, D) of the faces in ``image_paths`` aligned by their
    five ``landmarks`` each.

    ``align(image, landmarks) -> uint8 crop`` defaults to ``align.norm_crop`` (112x112); images are read and
    aligned by ``num_threads`` threads, one batch ahead of the model. ``desc=None`` prints no progress.
    """
    from keras_insightface.inference.images import read_image

    if align is None:
        from keras_insightface.inference.align import norm_crop as align
    landmarks = np.asarray(landmarks, dtype=np.float32)
    total = len(image_paths)
    if len(landmarks) != total:
        raise DataError(f"{desc or 'embedding'}: {total} images but {len(landmarks)} landmark sets")
    check_batch_size(batch_size, desc)
    if not total:
        raise DataError(f"{desc or 'embedding'}: no images")

    def load(index):
        return align(read_image(image_paths[index]), landmarks[index])

    with ThreadPoolExecutor(num_threads or os.cpu_count()) as pool:

        def batches():
            def submit(first):
                return [pool.submit(load, i) for i in range(first, min(first + batch_size, total))]

            upcoming = submit(0)
            for start in range(0, total, batch_size):
                current = upcoming
                if start + batch_size < total:
                    upcoming = submit(start + batch_size)
                yield np.stack([future.result() for future in current])

        parts = list(embed_batches(model, batches(), batch_size, flip, desc=desc, total=total))
    views = [np.concatenate(view) for view in zip(*parts)]
    return views[0], (views[1] if flip else None)

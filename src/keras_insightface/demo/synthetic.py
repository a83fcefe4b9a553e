"""The embedded default dataset: procedurally drawn face identities written in insightface's formats.

``generate_dataset`` renders ``num_identities x images_per_identity`` training faces into
``train.rec`` / ``train.idx`` / ``property`` and a verification pack ``synthetic_val.bin`` whose
balanced genuine / impostor pairs come from *other* identities, so verification measures generalisation.
Everything is deterministic from ``seed``. Rendering lives in ``synthetic_faces.py``.

Example:
    >>> from keras_insightface.demo.synthetic import generate_dataset
    >>> paths = generate_dataset("/tmp/synth", num_identities=50, images_per_identity=10)   # doctest: +SKIP
    >>> paths["train"], paths["val"]                                                         # doctest: +SKIP
"""

import functools
import json
import multiprocessing
from pathlib import Path

import numpy as np
import simplejpeg

from keras_insightface.atomic import write_bytes_atomic
from keras_insightface.data.binpack import write_bin
from keras_insightface.data.insightface_rec import write_insightface_rec
from keras_insightface.demo.synthetic_faces import render_faces, sample_identities

VAL_NAME = "synthetic_val.bin"


def _encode(images, quality=90):
    return [simplejpeg.encode_jpeg(np.ascontiguousarray(image), quality=quality) for image in images]


def _render_chunk(traits, difficulty, task):
    ids, seed = task
    return _encode(render_faces(traits, ids, seed=seed, difficulty=difficulty))


def _render_encoded(traits, ids, seed, difficulty, chunk=256, processes=1):
    """JPEG bytes of the faces of ``ids`` in order; chunks (seeded by their start) render in ``processes`` forked
    processes, so the images do not depend on the process count. Fork before JAX or grain start threads."""
    tasks = [(ids[start : start + chunk], seed + start) for start in range(0, len(ids), chunk)]
    render = functools.partial(_render_chunk, traits, difficulty)
    if processes <= 1 or len(tasks) == 1:
        return [image for task in tasks for image in render(task)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return [image for part in pool.map(render, tasks) for image in part]


def verification_pairs(identity_of_image, num_pairs, rng):
    """``num_pairs`` genuine and ``num_pairs`` impostor index pairs in random order, and the issame flags."""
    identity_of_image = np.asarray(identity_of_image)
    by_identity = [np.flatnonzero(identity_of_image == i) for i in np.unique(identity_of_image)]
    if min(len(images) for images in by_identity) < 2 or len(by_identity) < 2:
        raise ValueError("verification pairs need at least 2 identities with at least 2 images each")
    pairs = []
    for _ in range(num_pairs):
        images = by_identity[rng.integers(len(by_identity))]
        pairs.append((*rng.choice(images, 2, replace=False), True))
        first, second = rng.choice(len(by_identity), 2, replace=False)
        pairs.append((rng.choice(by_identity[first]), rng.choice(by_identity[second]), False))
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]


def generate_dataset(
    out_dir,
    num_identities=300,
    images_per_identity=20,
    num_val_identities=100,
    val_images_per_identity=6,
    num_pairs=600,
    seed=0,
    difficulty=1.0,
    processes=1,
):
    """Write the synthetic dataset into ``out_dir`` (skipped when an identical one is already there);
    ``processes`` > 1 renders in that many forked processes (same images).

    Returns ``{"train": out_dir, "val": out_dir/synthetic_val.bin}``.
    """
    out_dir = Path(out_dir)
    config = dict(
        num_identities=num_identities,
        images_per_identity=images_per_identity,
        num_val_identities=num_val_identities,
        val_images_per_identity=val_images_per_identity,
        num_pairs=num_pairs,
        seed=seed,
        difficulty=difficulty,
    )
    paths = {"train": str(out_dir), "val": str(out_dir / VAL_NAME)}
    stamp = out_dir / "synthetic.json"
    if stamp.exists() and json.loads(stamp.read_text()) == config:
        return paths
    out_dir.mkdir(parents=True, exist_ok=True)
    traits = sample_identities(num_identities + num_val_identities, seed)

    train_ids = np.repeat(np.arange(num_identities), images_per_identity)
    train_images = _render_encoded(traits, train_ids, seed * 1_000_003 + 1, difficulty, processes=processes)
    write_insightface_rec(out_dir, list(zip(train_images, train_ids.tolist())), num_identities)

    val_ids = np.repeat(np.arange(num_identities, num_identities + num_val_identities), val_images_per_identity)
    val_images = _render_encoded(traits, val_ids, seed * 1_000_003 + 7_777_777, difficulty, processes=processes)
    pairs = verification_pairs(val_ids, num_pairs // 2, np.random.default_rng(seed + 1))
    images = [val_images[i] for a, b, _ in pairs for i in (a, b)]
    write_bin(paths["val"], images, [same for _, _, same in pairs])

    write_bytes_atomic(stamp, json.dumps(config).encode())
    return paths

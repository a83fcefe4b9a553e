"""grain input pipeline: seeded per-epoch order -> shard per host -> decode in workers -> uint8 batches.

The CPU side only reads bytes, decodes and batches; augmentation happens in the compiled step. Each batch is
``(images uint8 (B, H, W, 3), labels int32 (B,), skipped int32 (B,))``: ``skipped`` is -1, or the index of a
corrupt record that was replaced by the next readable one (lenient mode), so the trainer can count and name
them. With ``strict=True`` a corrupt record stops the run with a ``DataError`` naming it.

The iterator of ``Loader.dataset`` supports ``get_state()`` / ``set_state()``: the exact next batch is
restored, also through the worker processes.

Example:
    >>> from keras_insightface.data.loader import make_loader
    >>> loader = make_loader(source, batch_size=128, seed=0)    # doctest: +SKIP
    >>> images, labels, skipped = next(iter(loader.dataset))     # doctest: +SKIP
"""

import dataclasses
import os
import threading
import time

import grain
import numpy as np
import simplejpeg

from keras_insightface.data.decode import decode_image
from keras_insightface.data.spawn_safe import SpawnSafeDataset
from keras_insightface.errors import DataError, DatasetError

MAX_REPLACEMENTS = 16


def describe_record(source, index):
    """How errors name record ``index``: the source's own description (a file path) or ``<name> record <i>``."""
    describe = getattr(source, "describe", None)
    return describe(index) if describe else f"{getattr(source, 'name', 'source')} record {index}"


@dataclasses.dataclass
class _Decode:
    """Picklable map for grain workers: record indices -> (uint8 images, int32 labels, int32 skipped indices).

    Errors name the image through ``source.describe(index)`` (a file path) when the source has it. In
    lenient mode a record that fails is replaced by the next readable one and reported in ``skipped``.
    ``jpeg_quality_level`` L > 0 re-compresses every image at a JPEG quality drawn from 80 +- 5L (the
    seed's JPEG augmentation: an encoder op, so it runs here on the CPU workers, seeded per batch).
    ``with_records`` adds a 4th array, the record each image was read from (its replacement's when it was
    replaced), so per-record data such as teacher embeddings can follow the images in the main process.
    """

    source: object
    image_size: tuple
    strict: bool
    jpeg_quality_level: float = 0
    seed: int = 0
    with_records: bool = False

    def recompress(self, image, rng):
        low = int(np.clip(80 - 5 * self.jpeg_quality_level, 1, 100))
        high = int(np.clip(80 + 5 * self.jpeg_quality_level, 1, 100))
        quality = int(rng.integers(low, high + 1))
        return simplejpeg.decode_jpeg(simplejpeg.encode_jpeg(image, quality=quality), colorspace="RGB")

    def read(self, index):
        data, label = self.source[index]
        return decode_image(data, self.image_size, where=describe_record(self.source, index)), np.int32(label)

    def one(self, index):
        """``(image, label, skipped, record read)``: ``skipped`` is -1, or ``index`` when a replacement was read."""
        index = int(index) % len(self.source)
        try:
            return (*self.read(index), -1, index)
        except DatasetError:
            raise
        except DataError:
            if self.strict:
                raise
        for step in range(1, MAX_REPLACEMENTS + 1):
            replacement = (index + step) % len(self.source)
            try:
                return (*self.read(replacement), index, replacement)
            except DatasetError:
                raise
            except DataError:
                continue
        raise DataError(f"{describe_record(self.source, index)} and the {MAX_REPLACEMENTS} records after it are all unreadable")

    def __call__(self, batch_index, indices):
        """Decode batch ``batch_index`` (counted over all epochs) straight into one preallocated uint8 array."""
        images = np.empty((len(indices), *self.image_size, 3), dtype=np.uint8)
        labels = np.empty(len(indices), dtype=np.int32)
        skipped = np.empty(len(indices), dtype=np.int32)
        records = np.empty(len(indices), dtype=np.int64)
        rng = np.random.default_rng([self.seed, batch_index]) if self.jpeg_quality_level > 0 else None
        for row, index in enumerate(indices):
            image, labels[row], skipped[row], records[row] = self.one(index)
            images[row] = self.recompress(image, rng) if rng is not None else image
        return (images, labels, skipped, records) if self.with_records else (images, labels, skipped)


def ordered_batches(source, batch_size, num_workers=None, image_size=(112, 112), strict=True):
    """Every record of ``source`` once, in order, as ``(uint8 images, int32 labels)`` batches (the last one may
    be short), decoded by ``num_workers`` threads (the JPEG decoder releases the GIL; default: cores - 1).

    A corrupt image is a ``DataError`` naming it; the first record is read before the threads start, so a bad
    source fails at once. ``strict=False`` replaces it by the next readable one, as training batches do.
    """
    if batch_size < 1:
        raise DataError(f"{getattr(source, 'name', 'source')}: batch_size must be positive, received {batch_size}")
    num_workers = default_num_workers() if num_workers is None else num_workers
    decode = _Decode(source=source, image_size=tuple(image_size), strict=strict)
    if strict:
        decode.read(0)
    batches = grain.MapDataset.range(len(source)).batch(batch_size, drop_remainder=False).map_with_index(decode)
    options = grain.ReadOptions(num_threads=num_workers, prefetch_buffer_size=2 * num_workers)
    for images, labels, _ in batches.to_iter_dataset(options):
        yield images, labels


def identity_groups(labels, group_size, rng):
    """``(G, group_size)`` record indices: each identity's images shuffled and cut into groups of ``group_size``
    (the rest of an identity left out), the groups in a random order drawn from ``rng``."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], np.arange(labels.max() + 2))
    groups = []
    for begin, end in zip(starts[:-1], starts[1:]):
        members = rng.permutation(order[begin:end])
        usable = len(members) // group_size * group_size
        groups.append(members[:usable].reshape(-1, group_size))
    groups = np.concatenate(groups)
    return groups[rng.permutation(len(groups))]


class IdentityGroups(grain.MapDataset):
    """Record indices ordered so that each run of ``group_size`` shares one identity, reshuffled every epoch.

    Per epoch, each identity's images are shuffled and cut into groups of ``group_size`` (the rest of an
    identity is left out that epoch), then the groups are shuffled; shard ``h`` of ``P`` takes groups
    ``h, h + P, ...``. A batch that is a multiple of ``group_size`` holds ``batch // group_size`` identity
    groups, as triplet losses need.
    """

    def __init__(self, labels, group_size, seed, shard_index=0, shard_count=1):
        super().__init__()
        self.labels, self.group_size, self.seed = np.asarray(labels), int(group_size), int(seed)
        self.shard_index, self.shard_count = shard_index, shard_count
        groups_per_shard = int(np.sum(np.bincount(self.labels) // self.group_size)) // shard_count
        if groups_per_shard == 0:
            raise DataError(f"too few identities with {self.group_size} images for identity-group batches")
        self.length = groups_per_shard * self.group_size
        self._cached_epoch, self._order = None, None

    def __len__(self):
        return self.length

    def __str__(self):
        return f"IdentityGroups(group_size={self.group_size})"

    def epoch_order(self, epoch):
        """All record indices of ``epoch`` in grouped order (computed once per epoch per process)."""
        if self._cached_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order, self._cached_epoch = identity_groups(self.labels, self.group_size, rng).ravel(), epoch
        return self._order

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, position = divmod(int(index), self.length)
        group, member = divmod(position, self.group_size)
        return int(self.epoch_order(epoch)[(group * self.shard_count + self.shard_index) * self.group_size + member])


@dataclasses.dataclass
class Loader:
    """An infinite, epoch-aligned batch stream and the number of batches in one epoch."""

    dataset: "grain.IterDataset"
    steps_per_epoch: int
    num_classes: int
    batch_size: int


class ExitWithParent:
    """grain ``worker_init_fn``: a watchdog thread that ends the decode worker as soon as the process that started
    it is gone (a trainer killed with ``kill -9`` leaves no ~0.5 GB workers behind; on exit the worker is
    re-parented, so its parent pid changes)."""

    def __init__(self, interval=0.5):
        self.interval = interval

    def __call__(self, worker_index, worker_count):
        parent = os.getppid()

        def watch():
            while os.getppid() == parent:
                time.sleep(self.interval)
            os._exit(1)

        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def default_num_workers():
    """One decode process per spare core (the main process drives the accelerator), at most 16."""
    return max(1, min((os.cpu_count() or 2) - 1, 16))


def _host_shard():
    try:
        import jax

        return jax.process_index(), jax.process_count()
    except ImportError:
        return 0, 1


def _preflight(decode, count):
    """Decode the first records: a dataset none of whose first images decode fails before training."""
    errors = []
    for index in range(min(count, 8)):
        try:
            decode.read(index)
            return
        except DataError as error:
            if decode.strict:
                raise
            errors.append(error)
    raise errors[0]


def make_loader(
    source,
    batch_size,
    seed=0,
    num_workers=None,
    image_size=(112, 112),
    image_per_class=0,
    strict=False,
    jpeg_quality_level=0,
    process_index=None,
    process_count=None,
    with_records=False,
    order=None,
):
    """Build the training pipeline over a random-access ``source`` (``i -> (bytes, label)``, ``.labels``).

    Each epoch is a fresh seeded permutation, sharded across hosts (``jax.process_index()`` by default);
    batches never straddle epochs. ``image_per_class > 1`` batches whole identity groups (batch rounded
    down to a multiple). ``num_workers=0`` decodes in the main process (useful for tiny tests).
    ``jpeg_quality_level`` > 0 re-compresses images in the workers (quality 80 +- 5 * level).
    ``with_records`` adds each image's record index as a 4th batch array. ``order``: record indices read in that
    order every epoch instead (offline-mined triples, ``triplet_mining.py``; one host).
    """
    name = getattr(source, "name", type(source).__name__)
    if process_index is None or process_count is None:
        process_index, process_count = _host_shard()
    if batch_size < 1:
        raise DataError(f"{name}: batch_size must be positive, received {batch_size}")
    if order is not None:
        ds = grain.MapDataset.source(np.asarray(order, np.int64))
        per_host = len(ds)
    elif image_per_class > 1:
        if batch_size < image_per_class:
            raise DataError(f"{name}: batch_size {batch_size} is smaller than image_per_class {image_per_class}")
        batch_size = batch_size // image_per_class * image_per_class
        ds = IdentityGroups(source.labels, image_per_class, seed, process_index, process_count)
        per_host = len(ds)
    else:
        per_host = len(source) // process_count
        ds = grain.MapDataset.range(len(source)).shuffle(seed=seed)[process_index : per_host * process_count : process_count]
    if per_host < batch_size:
        raise DataError(
            f"{name}: {len(source)} images ({per_host} usable per host) is fewer than one batch of {batch_size}; "
            "use a smaller batch_size or more data"
        )
    decode = _Decode(source, tuple(image_size), strict, jpeg_quality_level, seed, with_records)
    _preflight(decode, len(source))
    steps = per_host // batch_size
    ds = ds[: steps * batch_size].batch(batch_size, drop_remainder=True).map_with_index(decode).repeat(None)
    iter_ds = ds.to_iter_dataset()
    num_workers = default_num_workers() if num_workers is None else num_workers
    if num_workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iter_ds = SpawnSafeDataset(iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers),
                                                       worker_init_fn=ExitWithParent()))
    num_classes = int(getattr(source, "num_classes", 0))
    return Loader(iter_ds, steps, num_classes, batch_size)

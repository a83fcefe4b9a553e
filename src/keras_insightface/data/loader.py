"""grain input pipeline: seeded per-epoch shuffle -> shard per host -> decode in workers -> uint8 batches.

The CPU side only reads bytes, decodes and batches; augmentation happens in the compiled step.

Example:
    >>> from keras_insightface.data.loader import make_loader
    >>> loader = make_loader(source, batch_size=128, seed=0)    # doctest: +SKIP
    >>> images, labels = next(iter(loader.dataset))              # doctest: +SKIP
"""

import dataclasses
import os

import grain
import numpy as np

from keras_insightface.data.decode import decode_image
from keras_insightface.errors import DataError


@dataclasses.dataclass
class _Decode:
    """Picklable map for grain workers: (bytes, label) -> (uint8 image, int32 label).

    Errors name the image through ``source.describe(index)`` (a file path) when the source has it.
    """

    source: object
    image_size: tuple

    def __call__(self, index, record):
        data, label = record
        describe = getattr(self.source, "describe", None)
        where = describe(index) if describe else f"{getattr(self.source, 'name', 'source')} record {index}"
        return decode_image(data, self.image_size, where=where), np.int32(label)


@dataclasses.dataclass
class Loader:
    """An infinite, epoch-aligned batch stream and the number of batches in one epoch."""

    dataset: "grain.IterDataset"
    steps_per_epoch: int
    num_classes: int
    batch_size: int


def default_num_workers():
    """One decode process per spare core (the main process drives the accelerator), at most 16."""
    return max(1, min((os.cpu_count() or 2) - 1, 16))


def make_loader(source, batch_size, seed=0, num_workers=None, image_size=(112, 112), process_index=0, process_count=1):
    """Build the training pipeline over a random-access ``source`` (``i -> (bytes, label)``).

    Each epoch is a fresh seeded permutation; batches never straddle epochs (``drop_remainder``).
    ``num_workers=0`` decodes in the main process (useful for tiny tests).
    """
    name = getattr(source, "name", type(source).__name__)
    per_host = len(source) // process_count
    if batch_size < 1:
        raise DataError(f"{name}: batch_size must be positive, received {batch_size}")
    if per_host < batch_size:
        raise DataError(
            f"{name}: {len(source)} images ({per_host} per host) is fewer than one batch of {batch_size}; "
            "use a smaller batch_size or more data"
        )
    decode = _Decode(source, tuple(image_size))
    decode(0, source[0])  # a corrupt or mis-sized dataset fails here, before training starts
    ds = grain.MapDataset.source(source).map_with_index(decode)
    ds = ds.shuffle(seed=seed)[process_index : per_host * process_count : process_count]
    ds = ds.batch(batch_size, drop_remainder=True).repeat(None)
    iter_ds = ds.to_iter_dataset()
    num_workers = default_num_workers() if num_workers is None else num_workers
    if num_workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
    num_classes = int(getattr(source, "num_classes", 0))
    return Loader(iter_ds, per_host // batch_size, num_classes, batch_size)

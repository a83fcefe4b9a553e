"""The run's training data: its source and grain loader, opened from the config, opened again for a new dataset
(the seed's ``reset_dataset``) or when stages switch between plain and identity-group batches, mined again every
epoch for offline triplets (the seed's ``samples_per_mining``), and its iterator."""

import functools

import numpy as np

from keras_insightface.data.loader import describe_record, make_loader
from keras_insightface.data.sources import SubsetSource, open_source
from keras_insightface.data.triplet_mining import hardest_triplets, mining_sample, mining_size, triplet_order
from keras_insightface.errors import DataError
from keras_insightface.hosts import process_count
from keras_insightface.inference.embed import iter_embeddings
from keras_insightface.training import callbacks as cbs

MINING_GROUP = 4  # the seed's smallest identity group in a mining sample


def open_data(config):
    """``(source, teacher embeddings or None)`` of ``config.data``: the data source (identities with fewer than
    ``image_per_class`` images left out), checked to hold at least two identities."""
    data = config.data
    source = open_source(data.data_path, image_per_class=data.image_per_class, strict=data.strict_data,
                         allow_outside=data.allow_outside_paths)
    if source.num_classes < 2:  # one class trains to loss 0 and accuracy 1 and learns nothing
        raise DataError(f"{data.data_path}: {source.num_classes} class; face recognition training needs at least 2 "
                        "identities (check the labels, or image_per_class filtering)")
    # teacher embeddings (an npz from distill-data) stay in this process; batches say which records they hold
    teacher_embeddings = getattr(source, "embeddings", None)
    if teacher_embeddings is not None:
        source.embeddings = None
    return source, teacher_embeddings


def make_data_loader(config, source, global_batch_size, with_records, grouped=False, order=None):
    """The grain loader of this process's share of the global batch over ``source``, made of whole identity groups
    of ``image_per_class`` when ``grouped`` (the seed's triplet dataset; other stages only filter), or reading the
    records ``order`` (mined triples) in batches of a multiple of 3."""
    data = config.data
    batch_size = global_batch_size // process_count()
    return make_loader(
        source, batch_size // 3 * 3 if order is not None else batch_size, seed=config.run.seed,
        num_workers=data.num_workers, image_per_class=data.image_per_class if grouped and order is None else 0,
        strict=data.strict_data, jpeg_quality_level=data.jpeg_quality_level, with_records=with_records, order=order,
    )


def mined_order(run, epoch):
    """Record indices ``[anchor, positive, negative, ...]`` of ``epoch``: a mining sample of identity groups (the
    same for a given seed and epoch) embedded with the current basic model, each image with its hardest positive
    and negative (``data/triplet_mining.py``)."""
    data, source = run.config.data, run.source
    labels = np.asarray(source.labels)
    rng = np.random.default_rng([run.config.run.seed, epoch])
    group = max(MINING_GROUP, data.image_per_class)
    sample = mining_sample(labels, group, mining_size(data.samples_per_mining, len(source)), rng)
    subset = SubsetSource(source, sample, np.arange(source.num_classes))
    workers = None if data.num_workers is None else max(1, data.num_workers)
    embeddings = np.concatenate([emb for _, emb in iter_embeddings(
        subset, run.parts.basic_model, batch_size=run.global_batch_size, num_workers=workers,
        desc=f"triplet mining, epoch {epoch + 1}" if run.verbose else None, strict=data.strict_data)])
    positives, negatives = hardest_triplets(embeddings, labels[sample])
    return triplet_order(sample, positives, negatives)


def mine_data(run, epoch):
    """Offline triplets for ``epoch``: the run's loader and iterator read freshly mined triples (the previous
    iterator's workers stopped); the schedule follows the loader's steps per epoch."""
    if process_count() > 1:
        raise ValueError("samples_per_mining (offline triplet mining) runs on one host; use in-batch triplet "
                         "stages (image_per_class >= 2) on several hosts")
    order = mined_order(run, epoch)
    loader = make_data_loader(run.config, run.source, run.global_batch_size, run.teacher_embeddings is not None,
                              order=order)
    close_iterator(run)
    run.loader, run.iterator = loader, iter(loader.dataset)
    run.parts.schedule_settings["steps_per_epoch"] = loader.steps_per_epoch
    return run.iterator


def reopen_data(run, data_path=None, grouped=None):
    """The run's data from its start: read from ``data_path`` when given (the seed's ``reset_dataset``; it must hold
    the same number of identities, as the classifier is kept), batched by identity groups or not (``grouped``,
    default: as now; the source already open is reused)."""
    grouped = run.grouped if grouped is None else grouped
    if data_path is not None:
        run.config.data.data_path = data_path
        source, teacher_embeddings = open_data(run.config)
        if source.num_classes != run.loader.num_classes:
            raise DataError(f"{data_path}: {source.num_classes} identities, the run's classifier has "
                            f"{run.loader.num_classes}; a new dataset must keep the classes")
    else:
        source, teacher_embeddings = run.source, run.teacher_embeddings
    loader = make_data_loader(run.config, source, run.global_batch_size, teacher_embeddings is not None, grouped)
    close_iterator(run)
    run.source, run.loader, run.teacher_embeddings, run.grouped = source, loader, teacher_embeddings, grouped
    run.parts.schedule_settings["steps_per_epoch"] = loader.steps_per_epoch
    run.skipped_images = cbs.SkippedImages(functools.partial(describe_record, source))


def close_iterator(run):
    """Stop the loader's worker processes; the next stage opens the data again."""
    iterator, run.iterator = run.iterator, None
    if iterator is not None and hasattr(iterator, "close"):
        iterator.close()


def use_data(run, grouped, epoch=0):
    """Before a stage starting at ``epoch``: offline-mined triples when the run mines (``samples_per_mining``),
    else the data batched by identity groups when the stage has a triplet term, else not (opened again when that
    changes, as the seed switches between its triplet and plain datasets), and its iterator open."""
    if run.config.data.samples_per_mining > 0:
        mine_data(run, epoch)
        return
    if grouped != run.grouped:
        reopen_data(run, grouped=grouped)
    if run.iterator is None:
        run.iterator = iter(run.loader.dataset)

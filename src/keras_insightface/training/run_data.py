"""The run's training data: its source and grain loader, opened from the config, opened again for a new dataset
(the seed's ``reset_dataset``) or when stages switch between plain and identity-group batches, and its iterator."""

import functools

from keras_insightface.data.loader import describe_record, make_loader
from keras_insightface.data.sources import open_source
from keras_insightface.errors import DataError
from keras_insightface.training import callbacks as cbs
from keras_insightface.training.distribute import process_count


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


def make_data_loader(config, source, global_batch_size, with_records, grouped=False):
    """The grain loader of this process's share of the global batch over ``source``, made of whole identity groups
    of ``image_per_class`` when ``grouped`` (the seed's triplet dataset; other stages only filter)."""
    data = config.data
    return make_loader(
        source, global_batch_size // process_count(), seed=config.run.seed, num_workers=data.num_workers,
        image_per_class=data.image_per_class if grouped else 0, strict=data.strict_data,
        jpeg_quality_level=data.jpeg_quality_level, with_records=with_records,
    )


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


def use_data(run, grouped):
    """Before a stage: the data batched by identity groups when the stage has a triplet term, else not (opened
    again when that changes, as the seed switches between its triplet and plain datasets), and its iterator open."""
    if grouped != run.grouped:
        reopen_data(run, grouped=grouped)
    if run.iterator is None:
        run.iterator = iter(run.loader.dataset)

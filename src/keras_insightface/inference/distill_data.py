"""Teacher embeddings for distillation: run a teacher over a dataset and store them aligned with its images.

``distill_data`` writes an npz that ``open_source`` reads back as a training source with ``embeddings``:
``embeddings`` (float32, L2-normalised as the seed's ``data_distiller.py`` stores them; the distillation
losses normalise again, so this only fixes their scale), ``image_classes``, and ``image_names`` (relative to the
npz's folder) or, for RecordIO, ``rec_path`` (plus ``image_indices`` when only some records are used).
Records keep the source's order. The teacher is anything ``inference.embedders.open_model`` opens (``.keras``,
seed ``.h5``, ONNX, TorchScript, a callable).

Example:
    >>> import numpy as np, simplejpeg
    >>> from keras_insightface.data.insightface_rec import write_insightface_rec
    >>> from keras_insightface.data.sources import open_source
    >>> tmp = getfixture("tmp_path")
    >>> faces = [(simplejpeg.encode_jpeg(np.full((112, 112, 3), v, "uint8")), v // 100) for v in (50, 150)]
    >>> write_insightface_rec(tmp / "rec", faces, num_classes=2)
    >>> teacher = lambda images: np.asarray(images, "float32").mean(axis=(1, 2))  # (B, 3) "embeddings"
    >>> distill_data(tmp / "rec", teacher, tmp / "distilled.npz", batch_size=2, num_workers=0)  # doctest: +ELLIPSIS
    embedding ...: 2/2 (100%) - ... - img/s: ...
    '.../distilled.npz'
    >>> source = open_source(tmp / "distilled.npz")
    >>> source.embeddings.shape, source.labels.tolist()
    ((2, 3), [0, 1])
"""

from pathlib import Path

import numpy as np

from keras_insightface.data.npz_list import npz_list_fields, save_npz
from keras_insightface.data.sources import open_source
from keras_insightface.errors import DataError
from keras_insightface.inference.embed import iter_embeddings
from keras_insightface.inference.embedders import open_model


def distill_data(data_path, teacher, out_path, batch_size=256, flip=False, num_workers=None, image_size=(112, 112)):
    """Embed every image of the dataset at ``data_path`` with ``teacher`` (a model file or object, ``open_model``) and
    write ``out_path`` (an npz that ``open_source`` opens with ``embeddings``); returns ``out_path`` as a string."""
    source = open_source(data_path)
    if Path(out_path).suffix != ".npz":
        raise DataError(f"{out_path}: output must be an .npz file")
    teacher = open_model(teacher)
    labels, embeddings = [], []
    for batch_labels, batch_embeddings in iter_embeddings(source, teacher, batch_size, flip, num_workers, image_size):
        labels.append(batch_labels)
        embeddings.append(batch_embeddings)
    fields = npz_list_fields(source, np.arange(len(source)), Path(out_path).parent)
    save_npz(out_path, **fields, image_classes=np.concatenate(labels), embeddings=np.concatenate(embeddings))
    return str(out_path)

"""Dataset converters behind ``keras-insightface convert``: RecordIO <-> class folders, and new ``.bin`` packs.

Image bytes are copied as they are (no re-encoding), so a round trip is lossless; ``folders2rec`` checks each
image's header first, so a file that is not an image (a stray or planted file) stops the packing, named.

Example:
    >>> from keras_insightface.data.convert import folders_to_rec, make_bin, rec_to_folders
    >>> rec_to_folders("datasets/faces_emore", "faces_emore_folders")        # doctest: +SKIP
    >>> folders_to_rec("faces_emore_folders", "faces_emore_rec")             # doctest: +SKIP
    >>> make_bin("held_out_folders", "held_out.bin", num_pairs=3000)         # doctest: +SKIP
"""

from pathlib import Path

import simplejpeg

from keras_insightface.data.binpack import build_bin
from keras_insightface.data.decode import check_image, is_jpeg
from keras_insightface.data.insightface_rec import InsightfaceRec, write_insightface_rec
from keras_insightface.data.loader import describe_record
from keras_insightface.data.sources import open_source
from keras_insightface.errors import DataError
from keras_insightface.data.progress import progress_bar

DEFAULT_IMAGE_SIZE = (112, 112)


def _extension(data):
    """File extension for encoded image bytes: ``.png`` and ``.bmp`` by signature, else ``.jpg``."""
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"BM"):
        return ".bmp"
    return ".jpg"


def rec_to_folders(rec_path_or_dir, out_dir):
    """Write every image of an insightface ``.rec`` to ``out_dir/<label>/<index>.jpg``; returns the count.

    Class folders are named by label number and files by image index; non-JPEG payloads keep their own
    extension (``.png``, ``.bmp``). ``out_dir`` must be new or empty so classes are not mixed with old files.
    """
    ds = InsightfaceRec(rec_path_or_dir)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DataError(f"{out_dir}: output folder exists and is not empty")
    made = set()
    with progress_bar(len(ds), f"unpacking {ds.rec_path}") as advance:
        for i in range(len(ds)):
            data, label = ds[i]
            folder = out_dir / str(label)
            if label not in made:
                folder.mkdir(parents=True, exist_ok=True)
                made.add(label)
            (folder / f"{i}{_extension(data)}").write_bytes(data)
            advance()
    return len(ds)


def _image_size(source):
    """(height, width) from the first image's JPEG header; 112x112 for other formats or an empty source."""
    if not len(source):
        return DEFAULT_IMAGE_SIZE
    data = bytes(source[0][0])
    if not is_jpeg(data):
        return DEFAULT_IMAGE_SIZE
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as error:
        where = source.describe(0) if hasattr(source, "describe") else f"{source.name}: image 0"
        raise DataError(f"{where}: unreadable JPEG header ({error})") from None
    return height, width


class _CheckedImages:
    """``source``'s ``(bytes, label)`` with each image's header checked on access (``decode.check_image``)."""

    def __init__(self, source):
        self.source, self.labels = source, source.labels

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        data, label = self.source[index]
        check_image(data, describe_record(self.source, index))
        return data, label


def folders_to_rec(src, out_dir, num_classes=None):
    """Pack any ``open_source`` dataset (class folders, list file, ``.rec``) into ``out_dir/train.rec``.

    Writes ``train.rec``, ``train.idx`` and ``property`` in the insightface layout, streaming one image at a
    time; ``num_classes`` defaults to the source's. The ``property`` size comes from the first image's JPEG
    header (112x112 when it is not a JPEG). Refuses to overwrite an existing ``train.rec``. Returns the count.
    """
    source = open_source(src)
    out_dir = Path(out_dir)
    if (out_dir / "train.rec").exists():
        raise DataError(f"{out_dir / 'train.rec'}: already exists, not overwritten")
    num_classes = source.num_classes if num_classes is None else int(num_classes)
    write_insightface_rec(out_dir, _CheckedImages(source), num_classes, image_size=_image_size(source), progress=True)
    return len(source)


def make_bin(src, out_path, num_pairs, seed=0):
    """A verification pack of ``num_pairs`` random genuine and impostor pairs from an ``open_source`` dataset.

    Returns ``(pairs, issame)`` as ``build_bin`` does; ``num_pairs`` must be a multiple of 10 (the folds).
    """
    return build_bin(open_source(src), out_path, num_pairs, seed=seed)

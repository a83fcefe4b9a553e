"""Dataset converters behind ``keras-insightface convert``: RecordIO <-> class folders, and new ``.bin`` packs.

Image bytes are copied as they are (no re-encoding), so a round trip is lossless. ``folders2rec`` reads every
image's header (JPEG by simplejpeg, PNG and BMP by Pillow) against the pack's size (112x112 unless told):
training decodes each image at that size and calls any other one unreadable, so an image of another size or
one that does not read (a stray or planted file) stops the packing, every such image counted and the first
named. ``resize`` re-encodes the ones of another size at the pack's size; ``skip_bad`` leaves them out.
Class names travel both ways in the pack's ``classes.txt`` (``insightface_rec``). Existing outputs are
replaced only with ``overwrite``.

Example:
    >>> from keras_insightface.data.convert import folders_to_rec, make_bin, rec_to_folders
    >>> rec_to_folders("datasets/faces_emore", "faces_emore_folders")        # doctest: +SKIP
    >>> folders_to_rec("faces_emore_folders", "faces_emore_rec").images      # doctest: +SKIP
    >>> make_bin("held_out_folders", "held_out.bin", num_pairs=3000)         # doctest: +SKIP
"""

import dataclasses
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import simplejpeg

from keras_insightface.data.binpack import build_bin
from keras_insightface.data.decode import check_image, decode_image
from keras_insightface.data.insightface_rec import InsightfaceRec, read_class_names, write_insightface_rec
from keras_insightface.data.loader import describe_record
from keras_insightface.data.outputs import refuse_existing
from keras_insightface.data.progress import progress_bar
from keras_insightface.data.scan_cache import SCAN_CACHE_NAME
from keras_insightface.data.sources import IMAGE_EXTENSIONS, FileListSource, open_source
from keras_insightface.errors import DataError

DEFAULT_IMAGE_SIZE = (112, 112)
RESIZED_JPEG_QUALITY = 95
SHOWN = 5  # problem images named in a message


def parse_image_size(text):
    """``"112x96"`` -> ``(112, 96)`` (height x width); a bare ``"112"`` is square.

    Example:
        >>> parse_image_size("112x96"), parse_image_size("128")
        ((112, 96), (128, 128))
    """
    parts = str(text).lower().split("x")
    if len(parts) in (1, 2) and all(part.strip().isdigit() and int(part) > 0 for part in parts):
        height, width = (int(part) for part in parts * (3 - len(parts)))
        return height, width
    raise DataError(f"--image-size {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 112x112")


def _extension(data):
    """File extension for encoded image bytes: ``.png`` and ``.bmp`` by signature, else ``.jpg``."""
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"BM"):
        return ".bmp"
    return ".jpg"


def _listing(lines):
    """The first ``SHOWN`` of ``lines``, indented, and how many more there are."""
    shown = [f"  {line}" for line in lines[:SHOWN]]
    return "\n".join(shown + ([f"  ... and {len(lines) - SHOWN} more"] if len(lines) > SHOWN else []))


def _replaceable_entry(entry):
    """Whether ``entry`` of an output folder is something ``rec_to_folders`` wrote (a class folder of images) or
    the scan cache a dataset folder gets: only such a folder may be replaced."""
    if entry.name == SCAN_CACHE_NAME and entry.is_file(follow_symlinks=False):
        return True
    if not entry.is_dir(follow_symlinks=False):
        return False
    return all(inner.is_file(follow_symlinks=False) and inner.name.lower().endswith(IMAGE_EXTENSIONS)
               for inner in os.scandir(entry.path))


def _check_output_folder(out_dir, overwrite):
    """``out_dir`` must be new or empty, or, with ``overwrite``, hold only class folders of images."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DataError(f"{out_dir}: output folder is a file")
    entries = sorted(os.scandir(out_dir), key=lambda entry: entry.name)
    if not entries:
        return
    if not overwrite:
        raise DataError(
            f"{out_dir}: output folder exists and is not empty (--overwrite, or overwrite=True, replaces a folder "
            "of class folders)"
        )
    foreign = [entry.path for entry in entries if not _replaceable_entry(entry)]
    if foreign:
        raise DataError(
            f"{out_dir}: not replaced: --overwrite replaces a folder of class folders of images (what rec2folders "
            f"writes), and this one holds {foreign[0]}"
        )


def rec_to_folders(rec_path_or_dir, out_dir, overwrite=False):
    """Write every image of an insightface ``.rec`` to ``out_dir/<class name>/<index>.jpg``; returns the count.

    Class folders are named from the pack's ``classes.txt``, by label number when it has none; files are named by
    image index, and non-JPEG payloads keep their own extension (``.png``, ``.bmp``). ``out_dir`` must be new or
    empty so classes are not mixed with old files; ``overwrite`` replaces a folder of class folders of images.
    The folders are written beside ``out_dir`` under a temporary name and renamed into place once complete.
    """
    ds = InsightfaceRec(rec_path_or_dir)
    names = read_class_names(ds.rec_path, ds.num_classes) or [str(label) for label in range(ds.num_classes)]
    out_dir = Path(out_dir)
    _check_output_folder(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        made = set()
        with progress_bar(len(ds), f"unpacking {ds.rec_path}") as advance:
            for i in range(len(ds)):
                data, label = ds[i]
                folder = tmp / names[label]
                if label not in made:
                    folder.mkdir(parents=True)
                    made.add(label)
                (folder / f"{i}{_extension(data)}").write_bytes(data)
                advance()
        tmp.mkdir(exist_ok=True)
        _put_in_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(ds)


def _put_in_place(tmp, out_dir):
    """Rename the complete folder ``tmp`` to ``out_dir``, replacing what is there (checked before writing)."""
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    old = out_dir.parent / f".{out_dir.name}.old{os.getpid()}"
    out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old)


def _resized_jpeg(data, image_size, where):
    """``data`` decoded, resized to ``image_size`` (height, width) by Pillow's bicubic filter (it averages over the
    whole source footprint when shrinking) and encoded as JPEG at ``RESIZED_JPEG_QUALITY``."""
    from PIL import Image

    image = Image.fromarray(decode_image(data, None, where=where))
    resized = image.resize((image_size[1], image_size[0]), Image.Resampling.BICUBIC)
    return simplejpeg.encode_jpeg(np.ascontiguousarray(np.asarray(resized)), quality=RESIZED_JPEG_QUALITY)


@dataclasses.dataclass
class PackReport:
    """What ``folders_to_rec`` wrote: ``images`` packed in ``classes`` classes at ``image_size`` (height, width),
    the ``resized`` ones and the ``skipped`` ones (a line each, naming the image and its size or problem), and
    whether the class names went to ``classes.txt``."""

    images: int
    classes: int
    image_size: tuple
    resized: list
    skipped: list
    class_names: bool


class _PackImages:
    """``source``'s ``(bytes, label)`` in the pack: each image's header checked against ``image_size`` as it is
    read, an image of another size re-encoded at it with ``resize``; the others that do not fit are noted and
    left out (``None``), so one pass finds them all and ``raise_unfixed`` reports them before anything is kept.
    Sizes read HEIGHTxWIDTH, as ``--image-size``."""

    def __init__(self, source, image_size, resize, skip_bad):
        self.source, self.labels = source, source.labels
        self.image_size, self.resize, self.skip_bad = tuple(image_size), resize, skip_bad
        self.resized, self.left_out = [], []
        self.wrong_size = self.unreadable = 0

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        data, label = self.source[index]
        where = describe_record(self.source, index)
        try:
            height, width = check_image(data, where)
            if (height, width) == self.image_size:
                return data, label
            if self.resize:
                data = _resized_jpeg(data, self.image_size, where)
                self.resized.append(f"{where}: {height}x{width}")
                return data, label
        except DataError as error:
            self.unreadable += 1
            self.left_out.append(str(error))
            return None
        self.wrong_size += 1
        self.left_out.append(f"{where}: image is {height}x{width}, the pack's size is {_size_text(self.image_size)}")
        return None

    def raise_unfixed(self):
        """Raise one ``DataError`` counting the images that were left out and naming the first, with the fixes,
        unless ``skip_bad`` asked for them to be left out."""
        if not self.left_out or self.skip_bad:
            return
        size = _size_text(self.image_size)
        counts = ((self.wrong_size, f"not {size}"), (self.unreadable, "unreadable"))
        kinds = [f"{count} {what}" for count, what in counts if count]
        fixes = ["--skip-bad (skip_bad=True) leaves them out, listed"]
        if self.wrong_size:
            fixes.insert(0, f"--resize (resize=True) decodes the ones of another size, resizes them to {size} and "
                            f"re-encodes them as JPEG quality {RESIZED_JPEG_QUALITY}")
        raise DataError(
            f"{getattr(self.source, 'name', 'source')}: {len(self.left_out)} of {len(self)} images cannot be packed "
            f"as {size} (height x width) faces ({', '.join(kinds)}); training would call them unreadable:\n"
            f"{_listing(self.left_out)}\n"
            f"Fix: {'; '.join(fixes)}. Raw photos (e.g. LFW's 250x250 originals) need keras-insightface align "
            "first: resizing does not align a face."
        )


def _size_text(image_size):
    return f"{image_size[0]}x{image_size[1]}"


def _folder_class_names(src, source, num_classes):
    """The class folder names of a class-folder source (label ``i``: the folder its images are in); ``None`` for
    other sources, or with a warning when a class folder holds no image (its name cannot be told)."""
    if not isinstance(src, (str, os.PathLike)) or not Path(src).is_dir() or not isinstance(source, FileListSource):
        return None
    names = {}
    for path, label in zip(source.paths, source.labels.tolist()):
        names.setdefault(label, Path(path).parent.name)
    if len(names) != num_classes:
        warnings.warn(
            f"{src}: {num_classes - len(names)} class labels have no image (empty class folders); the pack gets no "
            "classes.txt and rec2folders will name its folders by label number",
            stacklevel=3,
        )
        return None
    return [names[label] for label in range(num_classes)]


def _class_names(src, source, num_classes):
    """Names of the pack's classes: a ``.rec`` source's own ``classes.txt``, else the class folder names."""
    if isinstance(source, InsightfaceRec):
        names = read_class_names(source.rec_path, source.num_classes)
        return names if names is not None and len(names) == num_classes else None
    return _folder_class_names(src, source, num_classes)


def folders_to_rec(src, out_dir, num_classes=None, image_size=DEFAULT_IMAGE_SIZE, resize=False, skip_bad=False,
                   overwrite=False, allow_outside=False):
    """Pack any ``open_source`` dataset (class folders, list file, ``.rec``) into ``out_dir/train.rec``.

    Writes ``train.rec``, ``train.idx`` and ``property`` (``num_classes``, default the source's, and
    ``image_size`` (height, width)) in the insightface layout, streaming one image at a time, and
    ``classes.txt`` with the class folder names (or a ``.rec`` source's names). Every image's header must read
    and give ``image_size``: those that do not are reported together in one ``DataError`` and nothing is
    written, unless ``resize`` (images of another size are decoded, resized and re-encoded as JPEG quality 95)
    or ``skip_bad`` (they are left out) says what to do. An existing ``train.rec`` is replaced only with
    ``overwrite``. ``allow_outside`` lets a list file name images outside its folder (``open_source``). Returns a
    ``PackReport``.
    """
    out_dir = Path(out_dir)
    refuse_existing(out_dir / "train.rec", overwrite)
    image_size = tuple(int(n) for n in image_size)
    source = open_source(src, allow_outside=allow_outside)
    num_classes = source.num_classes if num_classes is None else int(num_classes)
    names = _class_names(src, source, num_classes)
    images = _PackImages(source, image_size, resize, skip_bad)
    write_insightface_rec(out_dir, images, num_classes, image_size=image_size, progress=True, class_names=names,
                          before_commit=images.raise_unfixed)
    return PackReport(len(source) - len(images.left_out), num_classes, image_size, images.resized, images.left_out,
                      names is not None)


def make_bin(src, out_path, num_pairs, seed=0, overwrite=False, allow_outside=False):
    """A verification pack of ``num_pairs`` random genuine and as many impostor pairs from an ``open_source``
    dataset, in the 10 folds ``KFold(n_splits=10)`` cuts (``binpack.make_pairs``: any ``num_pairs`` from 10).

    Returns ``(pairs, issame)`` as ``build_bin`` does; an existing ``out_path`` is replaced only with ``overwrite``.
    """
    return build_bin(open_source(src, allow_outside=allow_outside), out_path, num_pairs, seed=seed,
                     overwrite=overwrite)

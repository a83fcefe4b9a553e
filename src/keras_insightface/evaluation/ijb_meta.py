"""IJB-B / IJB-C meta files, as insightface's IJB release ships them (``DATA_DIR`` may also be the ``IJBC``
folder itself):
    - ``IJBC/meta/ijbc_face_tid_mid.txt``: ``IMAGE TEMPLATE_ID MEDIA_ID`` per image (space separated).
    - ``IJBC/meta/ijbc_name_5pts_score.txt``: ``IMAGE x1 y1 ... x5 y5 FACENESS`` per image, same order.
    - ``IJBC/meta/ijbc_template_pair_label.txt``: ``TEMPLATE_1 TEMPLATE_2 LABEL`` (1 = same subject).
    - ``IJBC/meta/ijbc_1N_gallery_G1.csv``, ``..._G2.csv`` (IJB-B: ``ijbb_1N_gallery_S1.csv``, ``S2``) and
      ``ijbc_1N_probe_mixed.csv``: a header, then ``TEMPLATE_ID,SUBJECT_ID,...`` per image.
    - ``IJBC/loose_crop/IMAGE``: the images (aligned with ``inference.align.norm_crop`` on the five points).

A malformed line is a ``DataError`` naming the file and the line; an image name outside ``loose_crop/`` (``../``,
an absolute path) is one too.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from keras_insightface.data.confine import escapes
from keras_insightface.errors import DataError

SUBSETS = ("IJBB", "IJBC")
GALLERIES = MappingProxyType({"IJBB": ("S1", "S2"), "IJBC": ("G1", "G2")})  # 1:N gallery file names


@dataclass(frozen=True)
class IjbMeta:
    """The 1:1 meta data of one subset: per image ``names``, ``landmarks`` (N, 5, 2), ``face_scores``,
    ``templates``, ``medias``; per pair ``p1``, ``p2``, ``labels``."""

    subset: str
    meta_dir: Path
    image_dir: Path
    names: np.ndarray
    landmarks: np.ndarray
    face_scores: np.ndarray
    templates: np.ndarray
    medias: np.ndarray
    p1: np.ndarray
    p2: np.ndarray
    labels: np.ndarray

    def image_paths(self):
        return [str(self.image_dir / name) for name in self.names]


def subset_dirs(data_dir, subset):
    """``(meta_dir, image_dir)`` of ``subset`` under ``data_dir`` (the root holding ``IJBC/`` or that folder)."""
    subset = str(subset).upper()
    if subset not in SUBSETS:
        raise DataError(f"--subset {subset!r}: expected one of {', '.join(SUBSETS)}")
    data_dir = Path(data_dir)
    for root in (data_dir / subset, data_dir):
        if (root / "meta").is_dir():
            return root / "meta", root / "loose_crop"
    raise DataError(f"{data_dir}: no {subset}/meta folder (nor meta/) with the IJB meta files")


def _rows(path, fields, layout, delimiter=None, header=False, exact=True):
    """The lines of ``path`` split into fields, and their 1-based line numbers; blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: IJB meta file does not exist")
    rows, lines = [], []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                text = line.strip()
                if not text or (header and number == 1):
                    continue
                row = [v.strip() for v in text.split(delimiter)]
                if len(row) < fields or (exact and len(row) != fields):
                    raise DataError(f"{path}:{number}: expected {layout}, found {text[:120]!r}")
                rows.append(row[:fields])
                lines.append(number)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from None
    if not rows:
        raise DataError(f"{path}: no records (expected lines of {layout})")
    return rows, lines


def _column(path, rows, lines, column, dtype, layout):
    """Column ``column`` of ``rows`` as ``dtype``; a field that is not a number names its file and line."""
    values = np.array([row[column] for row in rows])
    try:
        return values.astype(dtype)
    except ValueError:
        for value, number in zip(values, lines):
            try:
                np.array([value]).astype(dtype)
            except ValueError:
                message = f"field {column + 1} {str(value)!r} is not a number ({layout})"
                raise DataError(f"{path}:{number}: {message}") from None
        raise


def read_template_media(path):
    """``(image names, templates, medias)`` from ``*_face_tid_mid.txt``."""
    layout = "'IMAGE TEMPLATE_ID MEDIA_ID'"
    rows, lines = _rows(path, 3, layout)
    return (np.array([row[0] for row in rows]), _column(path, rows, lines, 1, np.int64, layout),
            _column(path, rows, lines, 2, np.int64, layout))


def read_landmarks_scores(path):
    """``(image names, landmarks (N, 5, 2) float32, faceness scores float32)`` from ``*_name_5pts_score.txt``."""
    layout = "'IMAGE x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 FACENESS' (12 fields)"
    rows, lines = _rows(path, 12, layout)
    numbers = np.stack([_column(path, rows, lines, c, np.float32, layout) for c in range(1, 12)], axis=1)
    bad = np.flatnonzero(~np.isfinite(numbers).all(axis=1))
    if len(bad):
        raise DataError(f"{path}:{lines[bad[0]]}: landmarks and score must be finite numbers")
    return np.array([row[0] for row in rows]), numbers[:, :10].reshape(-1, 5, 2), numbers[:, 10]


def read_pairs(path):
    """``(p1, p2, labels bool)`` from ``*_template_pair_label.txt``; numpy's C parser, lines named on error."""
    layout = "'TEMPLATE_1 TEMPLATE_2 LABEL' (integers, label 0 or 1)"
    table = None
    if Path(path).is_file():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # an empty file: reported below
                table = np.loadtxt(path, dtype=np.int64, ndmin=2, comments=None)
        except ValueError:
            table = None
    if table is None or table.shape[1] != 3 or len(table) == 0 or not np.isin(table[:, 2], (0, 1)).all():
        rows, lines = _rows(path, 3, layout)  # the slow pass finds and names the bad line
        table = np.stack([_column(path, rows, lines, c, np.int64, layout) for c in range(3)], axis=1)
        bad = np.flatnonzero(~np.isin(table[:, 2], (0, 1)))
        if len(bad):
            raise DataError(f"{path}:{lines[bad[0]]}: label {table[bad[0], 2]} is not 0 or 1")
    return table[:, 0], table[:, 1], table[:, 2].astype(bool)


def read_template_subjects(path):
    """``(unique templates, their subject ids)`` from a 1:N gallery or probe CSV (one row per image)."""
    layout = "'TEMPLATE_ID,SUBJECT_ID,...' after a header line"
    rows, lines = _rows(path, 2, layout, delimiter=",", header=True, exact=False)
    templates = _column(path, rows, lines, 0, np.int64, layout)
    subjects = _column(path, rows, lines, 1, np.int64, layout)
    unique, first = np.unique(templates, return_index=True)
    clash = np.flatnonzero(subjects != subjects[first[np.searchsorted(unique, templates)]])
    if len(clash):
        raise DataError(f"{path}:{lines[clash[0]]}: template {templates[clash[0]]} is listed with two subject ids")
    return unique, subjects[first]


def read_meta(data_dir, subset="IJBC"):
    """The 1:1 meta data of ``subset`` (``IJBB`` or ``IJBC``) as an ``IjbMeta``; mismatches name the files."""
    meta_dir, image_dir = subset_dirs(data_dir, subset)
    prefix = meta_dir / str(subset).lower()
    media_path, points_path = Path(f"{prefix}_face_tid_mid.txt"), Path(f"{prefix}_name_5pts_score.txt")
    pairs_path = Path(f"{prefix}_template_pair_label.txt")
    names, templates, medias = read_template_media(media_path)
    outside = [i for i, name in enumerate(names.tolist()) if escapes(name)]
    if outside:
        raise DataError(f"{media_path}: record {outside[0] + 1} names {str(names[outside[0]])!r}, outside the image "
                        f"folder {image_dir}; IJB image names are file names inside loose_crop/")
    point_names, landmarks, scores = read_landmarks_scores(points_path)
    if len(point_names) != len(names):
        raise DataError(f"{points_path}: {len(point_names)} images, but {media_path.name} lists {len(names)}")
    differ = np.flatnonzero(point_names != names)
    if len(differ):
        i = differ[0]
        raise DataError(
            f"{points_path}: record {i + 1} is {str(point_names[i])!r}, but {media_path.name} has {str(names[i])!r}"
        )
    p1, p2, labels = read_pairs(pairs_path)
    known = np.unique(templates)
    unknown = np.flatnonzero(~np.isin(p1, known) | ~np.isin(p2, known))
    if len(unknown):
        i = unknown[0]
        raise DataError(
            f"{pairs_path}: pair {i + 1} ({p1[i]} {p2[i]}) names a template with no image in {media_path.name}"
        )
    if labels.all() or not labels.any():
        raise DataError(f"{pairs_path}: needs both genuine (1) and impostor (0) pairs")
    subset = str(subset).upper()
    return IjbMeta(subset, meta_dir, image_dir, names, landmarks, scores, templates, medias, p1, p2, labels)


def read_identification_meta(data_dir, subset="IJBC"):
    """``{"G1": (templates, subjects), "G2": ..., "probe": ...}`` from the 1:N CSVs (IJB-B: ``S1``, ``S2``)."""
    meta_dir, _ = subset_dirs(data_dir, subset)
    lower = str(subset).lower()
    files = {g: meta_dir / f"{lower}_1N_gallery_{g}.csv" for g in GALLERIES[str(subset).upper()]}
    files["probe"] = meta_dir / f"{lower}_1N_probe_mixed.csv"
    return {name: read_template_subjects(path) for name, path in files.items()}

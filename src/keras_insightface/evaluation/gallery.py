"""1:N face search: rank the identities of a gallery folder by their similarity to a query face.

A gallery is a folder of identities: each sub-folder is one identity (its name; every image under it, at any
depth, is a face of it), and an image directly inside the folder is an identity named by its file stem (an
image ``alice.jpg`` beside a folder ``alice/`` adds to that identity). Names starting with ``.`` are skipped;
symlinked identity folders are followed.
Images are aligned face crops of the model's input size, or raw photos when a ``prepare`` callable (image ->
aligned crop, e.g. a face detector) is given.

Scores are cosine similarities of flip-summed, L2-normalised embeddings (as ``compare``). An identity's
``score`` is its best-matching image's similarity (max over its images: one good enrolment photo is enough,
and extra photos never pull a match down); ``center_score`` is the similarity to its class center (the
normalised mean of its embeddings), a steadier number when an identity has many photos of varying quality.
Identities are ranked by ``score``.

Embeddings are cached in an ``.npz`` so a second search embeds only new or changed images: each entry is
keyed by the image's path relative to the gallery, its size and its modification time, and the file holds
the model's fingerprint; removed images are dropped. The default cache is a hidden file inside the gallery,
``.kif_gallery_<16 hex digits of the fingerprint's SHA-256>.npz``. The fingerprint (``model_id``, default
``inference.fingerprint.model_fingerprint``) is a model file's path, size and modification time (cheap, and any re-save
changes it), or for a Keras model in memory a SHA-256 of its architecture and weights (no file to look at;
about half a second for an r100's 65M weights); other callables need an explicit ``model_id``. ``prepare`` is
not part of the key: with another detector, pass another ``model_id`` or ``cache_path``.

Example:
    >>> import numpy as np, simplejpeg
    >>> root = getfixture("tmp_path")
    >>> for name, colour in [("red", (250, 0, 0)), ("blue", (0, 0, 250))]:
    ...     (root / name).mkdir()
    ...     face = np.full((112, 112, 3), colour, "uint8")
    ...     _ = (root / name / "1.jpg").write_bytes(simplejpeg.encode_jpeg(face, quality=100))
    >>> model = lambda images: np.asarray(images, "float32").mean(axis=(1, 2)) - 127.5   # (B, 3) "embeddings"
    >>> gallery = Gallery(model, root, model_id="mean colour")
    >>> query = np.full((112, 112, 3), (200, 0, 30), "uint8")
    >>> [(m.identity, m.image.endswith("red/1.jpg")) for m in gallery.search(query, top_k=1)]
    [('red', True)]
    >>> Gallery(model, root, model_id="mean colour").embedded  # the second time, every embedding is cached
    0
"""

import hashlib
import os
import typing
import zipfile
from pathlib import Path

import numpy as np

from keras_insightface.atomic import atomic_path
from keras_insightface.errors import DataError
from keras_insightface.inference.embed import embed_faces
from keras_insightface.inference.embedders import open_model
from keras_insightface.inference.fingerprint import model_fingerprint
from keras_insightface.inference.images import IMAGE_SUFFIXES, load_face

CACHE_PREFIX = ".kif_gallery_"
CACHE_KEYS = ("model_id", "paths", "sizes", "mtimes", "embeddings")


class Match(typing.NamedTuple):
    """One search result: the identity, its best image's similarity and path, and its class-center similarity."""

    identity: str
    score: float
    image: str
    center_score: float


def _image_files(root):
    """Every visible image file under ``root``; symlinked folders are followed (an identity folder linked in
    from elsewhere is part of the gallery), each real folder once, so a link loop ends."""
    seen = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs.clear()
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(folder) / name
            if not name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                yield path


def list_gallery(gallery_dir):
    """``[(identity, image path)]`` of a gallery folder, sorted by identity then path."""
    root = Path(gallery_dir)
    if not root.is_dir():
        raise DataError(f"{root}: gallery folder does not exist")
    entries = []
    for path in _image_files(root):
        parts = path.relative_to(root).parts
        entries.append((parts[0] if len(parts) > 1 else path.stem, path))
    if not entries:
        raise DataError(
            f"{root}: empty gallery: no .jpg/.jpeg/.png faces in it; put each identity's aligned faces in a"
            " sub-folder named after it"
        )
    return sorted(entries, key=lambda entry: (entry[0], entry[1].as_posix()))


def _read_cache(path, model_id):
    """``{relative path: (size, mtime_ns, embedding)}`` of a cache file made with ``model_id``; empty when the
    file is missing, unreadable or made with another model."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if any(key not in data for key in CACHE_KEYS) or str(data["model_id"]) != model_id:
                return {}
            fields = [data[key] for key in CACHE_KEYS[1:]]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # missing, truncated or not an npz: rebuilt
        return {}
    return {str(p): (int(s), int(m), e) for p, s, m, e in zip(*fields)}


def _write_cache(path, model_id, names, stats, embeddings):
    try:
        with atomic_path(path, "write the gallery's embedding cache") as tmp, open(tmp, "wb") as f:
            np.savez(
                f, model_id=np.array(model_id), paths=np.array(names), sizes=stats[:, 0], mtimes=stats[:, 1],
                embeddings=embeddings,
            )
    except DataError as error:
        raise DataError(f"{error}; give a writable cache file (cache_path, --cache)") from None


class Gallery:
    """The embedded identities of ``gallery_dir`` for ``search``; see the module docstring.

    ``model``: a model file or object (``inference.embedders.open_model``); ``cache_path``: the ``.npz`` cache (default
    inside the gallery, named by the model fingerprint); ``model_id``: the fingerprint to use instead of the
    computed one (required for callables without one); ``prepare``: image -> aligned crop.

    After construction ``embedded``, ``reused`` and ``dropped`` count the images embedded now, taken from the
    cache, and removed from it.
    """

    def __init__(self, model, gallery_dir, cache_path=None, model_id=None, prepare=None, batch_size=64):
        self.model, self.prepare, self.root = open_model(model), prepare, Path(gallery_dir)
        self.model_id = model_id or model_fingerprint(model)
        if self.model_id is None:
            raise DataError(
                f"model: cannot fingerprint a {type(model).__name__} for the gallery cache; pass its file path"
                " or a model_id that changes when the model does"
            )
        self.size = self.model.size
        entries = list_gallery(self.root)
        digest = hashlib.sha256(self.model_id.encode()).hexdigest()[:16]
        self.cache_path = Path(cache_path) if cache_path else self.root / f"{CACHE_PREFIX}{digest}.npz"
        self.images = [str(path) for _, path in entries]
        self.embeddings = self._cached_embeddings([path for _, path in entries], batch_size)
        identities, self.labels = np.unique([identity for identity, _ in entries], return_inverse=True)
        self.identities = identities.tolist()
        starts = np.flatnonzero(np.r_[True, self.labels[1:] != self.labels[:-1]])
        centers = np.add.reduceat(self.embeddings.astype(np.float64), starts)
        self.centers = centers / np.maximum(np.linalg.norm(centers, axis=1, keepdims=True), 1e-12)

    def _cached_embeddings(self, paths, batch_size):
        """Embeddings of ``paths``: cached ones whose size and mtime still match, the others computed now; the
        cache file is rewritten when anything changed. Sets ``embedded``, ``reused`` and ``dropped``."""
        names = [path.relative_to(self.root).as_posix() for path in paths]
        stats = np.array([(s.st_size, s.st_mtime_ns) for s in map(os.stat, paths)], dtype=np.int64).reshape(-1, 2)
        cache = _read_cache(self.cache_path, self.model_id)
        fresh = [cache.get(name, (None, None))[:2] == tuple(stat) for name, stat in zip(names, stats.tolist())]
        new = iter(self._embed([path for path, ok in zip(paths, fresh) if not ok], batch_size))
        embeddings = [cache[name][2] if ok else next(new) for name, ok in zip(names, fresh)]
        if len({len(e) for e in embeddings}) != 1:  # a cache of another embedding size under this model_id
            embeddings, fresh = list(self._embed(paths, batch_size)), [False] * len(paths)
        self.embedded = fresh.count(False)
        self.reused, self.dropped = len(paths) - self.embedded, len(set(cache) - set(names))
        embeddings = np.stack(embeddings).astype(np.float32)
        if self.embedded or self.dropped or len(cache) != len(names):
            _write_cache(self.cache_path, self.model_id, names, stats, embeddings)
        return embeddings

    def _embed(self, paths, batch_size):
        if not paths:
            return np.zeros((0, 0), np.float32)
        faces = np.stack([load_face(path, self.size, self.prepare) for path in paths])
        return embed_faces(self.model, faces, batch_size)

    def __len__(self):
        return len(self.images)

    def search(self, image, top_k=5):
        """The ``top_k`` best-scoring identities for the face ``image`` (path or uint8 array), best first, as
        ``Match(identity, score, image, center_score)``; fewer when the gallery has fewer identities."""
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise DataError(f"top_k must be a positive integer, received {top_k!r}")
        query = embed_faces(self.model, load_face(image, self.size, self.prepare, "query")[None])[0]
        if len(query) != self.embeddings.shape[1]:
            raise DataError(f"query: embedding size {len(query)} differs from the gallery's {self.embeddings.shape[1]}")
        scores = self.embeddings.astype(np.float64) @ query
        best = np.lexsort((-scores, self.labels))  # per identity (labels ascending), its best image first
        firsts = best[np.r_[True, self.labels[best][1:] != self.labels[best][:-1]]]
        center_scores = self.centers @ query
        order = sorted(range(len(firsts)), key=lambda k: (-scores[firsts[k]], self.identities[k]))[:top_k]
        return [
            Match(self.identities[k], float(scores[firsts[k]]), self.images[firsts[k]], float(center_scores[k]))
            for k in order
        ]

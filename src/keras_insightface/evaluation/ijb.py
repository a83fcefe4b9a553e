"""IJB-B / IJB-C evaluation: 1:1 template verification (TAR at FAR, ROC) and 1:N identification (CMC, TPIR).

The meta files (templates, medias, pairs, landmarks, galleries) are read by ``ijb_meta.py``; the embeddings come
from ``inference.embed.embed_files``.

Pipeline: embeddings of each aligned image and of its mirror (kept apart, so one pass serves every mode) ->
image features by the mode ``N{0,1}D{0,1}F{0,1}`` (the seed's naming: F1 adds the flip embedding, N1
L2-normalises each image's embedding, D1 multiplies it by the detector's faceness score, in that order; the
default is ``N0D1F1``; insightface's scripts name the norm flag the other way round, their ``N1`` keeps the
norm) -> template features (mean over the images of a media, sum over the medias, L2-normalise) -> cosine
scores of the template pairs -> TAR at FAR and AUC, or identification against the two galleries.

TAR at FAR and AUC are computed as published IJB tables are (insightface's ``ijb_11.py``, the seed's
``IJB_evals.py``): on scikit-learn's ``roc_curve`` (collinear points dropped), the point whose FAR is nearest
the target, the highest TAR of equally near points; AUC by the trapezoid rule on that curve (``Roc``, our own
numpy code, checked against scikit-learn in the tests). 1:N CMC and TPIR at FPIR follow ``IJB_evals.py``'s
``evaluation_1N`` (``identification``).

Example:
    >>> rng = np.random.default_rng(0)
    >>> labels = np.r_[np.ones(100), np.zeros(1000)].astype(bool)
    >>> scores = np.where(labels, 1.0, 0.0) + rng.normal(0, 0.3, labels.size)
    >>> roc = Roc(scores, labels)
    >>> print(markdown_table({"toy": roc}, fars=(1e-2, 1e-1)))
    | method | 1e-02 | 1e-01 | AUC |
    |---|---|---|---|
    | toy | 86.00 | 99.00 | 99.44 |
"""

import os
import re
import warnings
from pathlib import Path

import numpy as np

from keras_insightface.atomic import savefig_atomic
from keras_insightface.errors import DataError

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
FPIRS = (1e-4, 1e-3, 1e-2, 1e-1)
RANKS = (1, 5, 10)
DEFAULT_MODE = "N0D1F1"
ALL_MODES = tuple(f"N{n}D{d}F{f}" for n in (1, 0) for d in (1, 0) for f in (1, 0))  # the seed's order


# ---------------------------------------------------------------------------------------------------------------
# image features (the embeddings come from inference.embed.embed_files)
# ---------------------------------------------------------------------------------------------------------------
def parse_mode(mode):
    """``"N0D1F1"`` -> ``(norm, detector, flip)`` booleans."""
    match = re.fullmatch(r"N([01])D([01])F([01])", str(mode).strip().upper())
    if match is None:
        raise DataError(f"mode {mode!r}: expected N{{0,1}}D{{0,1}}F{{0,1}}, e.g. {DEFAULT_MODE}, or 'all'")
    return tuple(v == "1" for v in match.groups())


def image_features(embeddings, flip_embeddings=None, face_scores=None, mode=DEFAULT_MODE):
    """The per-image features that ``mode`` pools: + flip (F1), then L2-normalise (N1), then x faceness (D1).

    Example:
        >>> image_features(np.array([[3.0, 4.0]]), np.array([[1.0, 0.0]]), np.array([0.5]), "N1D1F1").round(3)
        array([[0.354, 0.354]], dtype=float32)
    """
    norm, detector, flip = parse_mode(mode)
    features = np.array(embeddings, dtype=np.float32)
    if flip:
        if flip_embeddings is None:
            raise DataError(f"mode {mode}: F1 needs the flip embeddings")
        features += np.asarray(flip_embeddings, dtype=np.float32)
    scale = np.ones(len(features), np.float32)
    if norm:
        scale /= np.maximum(np.linalg.norm(features, axis=1), 1e-12)
    if detector:
        if face_scores is None:
            raise DataError(f"mode {mode}: D1 needs the faceness scores")
        scale *= np.asarray(face_scores, dtype=np.float32)
    features *= scale[:, None]
    return features


# ---------------------------------------------------------------------------------------------------------------
# template features and pair scores
# ---------------------------------------------------------------------------------------------------------------
def pool_templates(features, templates, medias, chunk=65536):
    """``(template features float32 L2-normalised, template ids sorted)``: mean over each media, sum per template.

    Vectorised: images are ordered by (template, media) and summed with ``np.add.reduceat`` in float64, in
    chunks of about ``chunk`` images cut at media boundaries (so no full reordered copy is made).

    Example:
        >>> feats = np.array([[1.0, 0], [3.0, 0], [0, 2.0], [0, 5.0]])
        >>> pooled, ids = pool_templates(feats, [7, 7, 7, 9], [1, 1, 2, 3])  # 7: (2, 0) + (0, 2); 9: (0, 5)
        >>> print(pooled.round(3), ids)
        [[0.707 0.707]
         [0.    1.   ]] [7 9]
    """
    features = np.asarray(features)
    templates, medias = np.asarray(templates, np.int64), np.asarray(medias, np.int64)
    if not (len(features) == len(templates) == len(medias)) or features.ndim != 2 or len(features) == 0:
        raise DataError(
            f"pool_templates: features {features.shape}, {len(templates)} templates and {len(medias)} medias differ"
        )
    order = np.lexsort((medias, templates))
    t, m = templates[order], medias[order]
    media_start = np.flatnonzero(np.r_[True, (t[1:] != t[:-1]) | (m[1:] != m[:-1])])
    media_count = np.diff(np.r_[media_start, len(t)])
    media_sums = np.empty((len(media_start), features.shape[1]), np.float64)
    first = 0
    while first < len(media_start):
        last = min(int(np.searchsorted(media_start, media_start[first] + chunk, side="left")), len(media_start))
        last = max(last, first + 1)
        lo, hi = media_start[first], (media_start[last] if last < len(media_start) else len(t))
        media_sums[first:last] = np.add.reduceat(
            features[order[lo:hi]], media_start[first:last] - lo, axis=0, dtype=np.float64
        )
        first = last
    media_means = media_sums / media_count[:, None]
    media_template = t[media_start]
    template_start = np.flatnonzero(np.r_[True, media_template[1:] != media_template[:-1]])
    pooled = np.add.reduceat(media_means, template_start, axis=0)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32), media_template[template_start]


def template_rows(template_ids, wanted, what="template"):
    """Row of each id of ``wanted`` in the sorted ``template_ids``; an unknown id is a ``DataError``."""
    template_ids, wanted = np.asarray(template_ids), np.asarray(wanted)
    rows = np.minimum(np.searchsorted(template_ids, wanted), len(template_ids) - 1)
    missing = np.flatnonzero(template_ids[rows] != wanted)
    if len(missing):
        raise DataError(f"{what} {wanted[missing[0]]} has no template features (no image of it)")
    return rows


def pair_scores(template_features, template_ids, p1, p2, chunk=1 << 20):
    """Cosine scores (float32) of the template pairs ``(p1[i], p2[i])``, computed ``chunk`` pairs at a time.

    Pairs are taken in order of ``p1``; a chunk whose distinct templates are few (IJB's gallery x probe grid)
    is one matrix product of its distinct rows, gathered; a sparse one is a row-wise dot product. The result
    is in the input order and does not depend on ``chunk`` beyond float32 rounding.
    """
    features = np.ascontiguousarray(template_features, dtype=np.float32)
    rows1, rows2 = template_rows(template_ids, p1), template_rows(template_ids, p2)
    if len(rows1) != len(rows2):
        raise DataError(f"pair_scores: {len(rows1)} first and {len(rows2)} second templates")
    if chunk < 1:
        raise DataError(f"pair_scores: chunk must be positive, received {chunk}")
    order = np.argsort(rows1, kind="stable")
    scores = np.empty(len(rows1), np.float32)
    seen = np.zeros(len(features), bool)
    local = np.zeros(len(features), np.int64)
    for start in range(0, len(order), chunk):
        index = order[start : start + chunk]
        r1, r2 = rows1[index], rows2[index]
        u1 = r1[np.r_[True, r1[1:] != r1[:-1]]]  # r1 is sorted within the chunk
        seen[r2] = True
        u2 = np.flatnonzero(seen)
        seen[u2] = False
        if len(u1) * len(u2) <= 8 * len(index):
            local[u1] = np.arange(len(u1))
            i1 = local[r1]
            local[u2] = np.arange(len(u2))
            scores[index] = (features[u1] @ features[u2].T)[i1, local[r2]]
        else:
            scores[index] = np.einsum("ij,ij->i", features[r1], features[r2])
    return scores


# ---------------------------------------------------------------------------------------------------------------
# ROC, TAR at FAR, AUC
# ---------------------------------------------------------------------------------------------------------------
class Roc:
    """The ROC of ``scores`` for ``labels`` (True = genuine), as scikit-learn's ``roc_curve`` computes it.

    ``fpr``, ``tpr`` and ``roc_thresholds`` equal ``sklearn.metrics.roc_curve(labels, scores)`` (its default
    ``drop_intermediate=True``: a point collinear with its two neighbours is dropped; the curve starts at (0, 0)
    with threshold inf; a pair is accepted when its score is >= the threshold). Published IJB tables read TAR
    at FAR from that curve, so ``tar_at_far`` does too; ``auc`` integrates it as ``sklearn.metrics.auc``. The
    sorted ``genuine`` and ``impostor`` scores are kept for ``rule="at_most"`` and ``curve`` (the full ROC).

    Scores keep their float dtype (float32 ties stay ties, as in scikit-learn); labels of one kind only give a
    nan FAR (no impostor) or TAR (no genuine), as scikit-learn, with a warning.
    """

    def __init__(self, scores, labels):
        scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
        if not np.issubdtype(scores.dtype, np.floating):
            scores = scores.astype(np.float64)
        if scores.shape != labels.shape or scores.ndim != 1 or scores.size == 0:
            raise DataError(f"Roc: scores {scores.shape} and labels {labels.shape} must be one non-empty 1-D shape")
        if not np.isfinite(scores).all():
            raise DataError("Roc: scores must be finite")
        self.genuine = np.sort(scores[labels])
        self.impostor = np.sort(scores[~labels])[::-1]  # descending
        descending = np.sort(scores)[::-1]
        last = np.r_[np.flatnonzero(descending[1:] != descending[:-1]), len(descending) - 1]  # end of each level
        levels = descending[last]
        del descending
        tps = len(self.genuine) - np.searchsorted(self.genuine, levels, side="left")  # genuine >= each level
        fps = last + 1 - tps
        keep = np.ones(len(fps), bool)
        if len(fps) > 2:  # scikit-learn's drop_intermediate: keep the corners (a second difference is not 0)
            keep[1:-1] = (np.diff(fps, 2) != 0) | (np.diff(tps, 2) != 0)
        self.roc_thresholds = np.r_[np.inf, levels[keep].astype(np.float64)]
        self.fpr = self._rate(np.r_[0, fps[keep]], "impostor", "FAR")
        self.tpr = self._rate(np.r_[0, tps[keep]], "genuine", "TAR")

    @staticmethod
    def _rate(counts, kind, name):
        """``counts / counts[-1]`` (float64), or nan everywhere with a warning when there is none of ``kind``."""
        if counts[-1] > 0:
            return counts / counts[-1]
        warnings.warn(f"Roc: no {kind} scores, {name} is undefined (nan), as in scikit-learn's roc_curve",
                      stacklevel=3)
        return np.full(len(counts), np.nan)

    def _nearest(self, fars):
        """insightface / the seed: on the curve reversed, the first point of FAR nearest each target."""
        flipped = self.fpr[::-1]
        return np.array([len(flipped) - 1 - int(np.argmin(np.abs(flipped - far))) for far in fars], np.int64)

    def _at_most(self, fars):
        """``(accepted impostors, accepted genuine, threshold)`` of the full-ROC point with most impostors
        <= FAR x N: every score above the first impostor that must stay rejected (all scores when none must)."""
        n = len(self.impostor)
        rejected = np.floor(np.asarray(fars, dtype=np.float64) * n).astype(np.int64)
        everything = rejected >= n
        bound = self.impostor[np.minimum(rejected, max(n - 1, 0))] if n else np.full(len(rejected), -np.inf)
        bound = np.where(everything, -np.inf, bound)
        ascending = self.impostor[::-1]
        impostors = n - np.searchsorted(ascending, bound, side="right")
        genuine_below = np.searchsorted(self.genuine, bound, side="right")
        lowest = np.full(len(bound), np.inf)
        has_genuine = genuine_below < len(self.genuine)
        lowest[has_genuine] = self.genuine[genuine_below[has_genuine]]
        has_impostor = impostors > 0
        lowest[has_impostor] = np.minimum(lowest[has_impostor], ascending[n - impostors[has_impostor]])
        return impostors, len(self.genuine) - genuine_below, lowest

    def tar_at_far(self, fars=FARS, rule="nearest"):
        """TAR (float64 array) at each FAR of ``fars``.

        ``rule="nearest"`` (the default) is how insightface's ``ijb_11.py`` and the seed's ``IJB_evals.py`` read
        published tables: on ``roc_curve``'s points, the point whose FAR is nearest the target, the last (highest
        TAR) of equally near points. ``rule="at_most"`` is the best TAR of any threshold with FAR <= target.
        """
        fars = np.atleast_1d(np.asarray(fars, dtype=np.float64))
        if rule == "nearest":
            return self.tpr[self._nearest(fars)]
        if rule == "at_most":
            genuine = self._at_most(fars)[1]
            return genuine / len(self.genuine) if len(self.genuine) else np.full(len(fars), np.nan)
        raise DataError(f"TAR at FAR rule {rule!r}: expected 'nearest' or 'at_most'")

    def thresholds(self, fars=FARS, rule="nearest"):
        """The threshold of the point ``tar_at_far`` selects: pairs scoring >= it are accepted (inf: none)."""
        fars = np.atleast_1d(np.asarray(fars, dtype=np.float64))
        if rule == "nearest":
            return self.roc_thresholds[self._nearest(fars)]
        if rule == "at_most":
            return self._at_most(fars)[2].astype(np.float64)
        raise DataError(f"TAR at FAR rule {rule!r}: expected 'nearest' or 'at_most'")

    def auc(self):
        """Area under ``(fpr, tpr)`` by the trapezoid rule, as ``sklearn.metrics.auc`` (nan for one kind only)."""
        return float(np.sum(np.diff(self.fpr) * (self.tpr[1:] + self.tpr[:-1]) / 2.0))

    def curve(self, points=400, min_far=None):
        """``(far, tar)`` at about ``points`` full-ROC points, log-spaced in FAR from ``min_far`` (default 1/N) to 1."""
        n, g = len(self.impostor), len(self.genuine)
        if not (n and g):
            return self.fpr, self.tpr
        low = np.log10(min_far if min_far else 1.0 / n)
        impostors, genuine, _ = self._at_most(np.r_[0.0, np.logspace(low, 0, points)])
        far, tar = np.unique(np.stack([impostors / n, genuine / g]), axis=1)
        return far, tar


def tar_at_far(scores, labels, fars=FARS, rule="nearest"):
    """TAR at each FAR of ``fars`` for cosine ``scores`` and ``labels`` (True = same subject).

    Example:
        >>> genuine = np.r_[np.linspace(0.65, 1.0, 8), 0.55, 0.3]  # 8 above every impostor, then 0.55 and 0.3
        >>> impostor = np.linspace(0.0, 0.6, 1000)                # FAR 1e-1 accepts those above ~0.54
        >>> tar_at_far(np.r_[genuine, impostor], np.r_[np.ones(10), np.zeros(1000)], fars=(1e-3, 1e-1)).tolist()
        [0.8, 0.9]
    """
    return Roc(scores, labels).tar_at_far(fars, rule)


def roc_auc(scores, labels):
    """Area under the ROC of ``scores`` for ``labels`` (``Roc.auc``: scikit-learn's ``auc`` of its ``roc_curve``)."""
    return Roc(scores, labels).auc()


def markdown_table(rocs, fars=FARS, rule="nearest"):
    """A markdown table of TAR (%) at each FAR and the AUC (%) for ``{name: Roc}``."""
    lines = ["| method | " + " | ".join(f"{far:.0e}" for far in fars) + " | AUC |", "|---" * (len(fars) + 2) + "|"]
    for name, roc in rocs.items():
        tars = " | ".join(f"{100 * v:.2f}" for v in roc.tar_at_far(fars, rule))
        lines.append(f"| {name} | {tars} | {100 * roc.auc():.2f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# 1:N identification
# ---------------------------------------------------------------------------------------------------------------
def fpir_grid(points=100):
    """The seed's FPIR grid: ``10 ** e`` for ``e`` in ``np.arange(-4, 0, 4 / points)``, then 1 (101 points).

    Its decades are not exact (``1e-3`` is ``0.001000000000000002``); ``floor(FPIR x non-mated)`` is taken on
    these very values, as the seed does, so the thresholds match its table.
    """
    return np.array([10**exponent for exponent in np.arange(-4, 0, 4 / points)] + [1.0])


def identification(probe_features, probe_subjects, gallery_features, gallery_subjects, max_rank=20, fpirs=None):
    """Open-set identification of probe templates against one gallery (one template per subject).

    The seed's ``IJB_evals.py`` ``evaluation_1N``: a mated probe (its subject is in the gallery) is ranked by
    the gallery's scores sorted as ``np.argsort(scores)[::-1]`` (stable: of tied scores the later gallery row
    ranks first); it counts at an FPIR when its own score is above every other gallery score and above the
    threshold ``best[max(floor(FPIR x non-mated) - 1, 0)]`` of the non-mated probes' best scores sorted
    descending.

    Returns a dict: ``cmc`` (hit rate at ranks 1..``max_rank`` over the mated probes), ``hits`` (their counts),
    ``mated`` and ``non_mated`` (probe counts), ``fpir``, ``tpir`` and ``thresholds``. ``fpirs`` defaults to
    the seed's 101-point grid over 1e-4..1 (``fpir_grid()``).

    Example:
        >>> gallery = np.eye(3, dtype="float32")
        >>> probes = np.array([[1, 0.1, 0], [0.2, 1, 0], [0.8, 0.6, 0]], "float32")
        >>> result = identification(probes, [10, 11, 11], gallery, [10, 11, 12], max_rank=3)
        >>> result["cmc"].tolist(), result["mated"], result["non_mated"]
        ([0.6666666666666666, 1.0, 1.0], 3, 0)
    """
    fpirs = fpir_grid() if fpirs is None else np.asarray(fpirs, dtype=np.float64)
    probe_subjects, gallery_subjects = np.asarray(probe_subjects), np.asarray(gallery_subjects)
    unique, counts = np.unique(gallery_subjects, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"identification: gallery subject {unique[counts > 1][0]} has more than one template")
    similarity = np.asarray(probe_features, np.float32) @ np.asarray(gallery_features, np.float32).T
    order = np.argsort(gallery_subjects)
    position = np.searchsorted(gallery_subjects, probe_subjects, sorter=order)
    column = order[np.minimum(position, len(order) - 1)]
    mated = gallery_subjects[column] == probe_subjects
    mated_similarity, own = similarity[mated], column[mated]
    mated_scores = mated_similarity[np.arange(len(own)), own]
    later = np.arange(similarity.shape[1])[None, :] > own[:, None]
    ties = mated_similarity == mated_scores[:, None]
    rank = (mated_similarity > mated_scores[:, None]).sum(axis=1) + (ties & later).sum(axis=1)  # 0 = first
    strictly_best = (rank == 0) & (ties.sum(axis=1) == 1)  # the own score alone at the top
    ranks = np.arange(1, max_rank + 1)
    hits = (rank[None, :] < ranks[:, None]).sum(axis=1)
    best_non_mated = np.sort(similarity[~mated].max(axis=1))[::-1] if (~mated).any() else np.zeros(0)
    if len(best_non_mated):
        thresholds = best_non_mated[np.maximum(np.floor(fpirs * len(best_non_mated)).astype(int) - 1, 0)]
        correct = strictly_best[None, :] & (mated_scores[None, :] > thresholds[:, None])
        tpir = correct.sum(axis=1) / max(mated.sum(), 1)
    else:
        thresholds, tpir = np.full(len(fpirs), np.nan), np.full(len(fpirs), np.nan)
    return {"cmc": hits / max(mated.sum(), 1), "hits": hits, "mated": int(mated.sum()),
            "non_mated": int((~mated).sum()), "fpir": fpirs, "tpir": tpir, "thresholds": thresholds}


def combine_galleries(results):
    """The seed's 'Mean' row: CMC = the galleries' hits over the number of probes, TPIR averaged."""
    results = list(results)
    hits = sum(r["hits"] for r in results)
    probes = results[0]["mated"] + results[0]["non_mated"]
    return {"cmc": hits / max(probes, 1), "hits": hits, "mated": sum(r["mated"] for r in results),
            "non_mated": sum(r["non_mated"] for r in results), "fpir": results[0]["fpir"],
            "tpir": np.mean([r["tpir"] for r in results], axis=0),
            "thresholds": np.full(len(results[0]["fpir"]), np.nan)}


def identification_table(results, ranks=RANKS, fpirs=FPIRS):
    """A markdown table of CMC (%) at ``ranks`` and TPIR (%) at ``fpirs`` for ``{name: identification result}``.

    TPIR is read at the curve's FPIR nearest each of ``fpirs`` (on the seed's grid: the values its table shows).
    """
    head = [f"top-{r}" for r in ranks] + [f"TPIR@{f:.0e}" for f in fpirs]
    lines = ["| gallery | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, result in results.items():
        cmc = [result["cmc"][r - 1] if r <= len(result["cmc"]) else np.nan for r in ranks]
        grid = np.log10(result["fpir"])
        tpir = [result["tpir"][int(np.argmin(np.abs(grid - np.log10(f))))] for f in fpirs]
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.2f}" for v in cmc + tpir) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# runs, score files and plots
# ---------------------------------------------------------------------------------------------------------------
def verification_scores(meta, embeddings, flip_embeddings=None, modes=(DEFAULT_MODE,), chunk=1 << 20):
    """``{mode: pair scores}`` of ``meta``'s pairs for each mode."""
    results = {}
    for mode in modes:
        features = image_features(embeddings, flip_embeddings, meta.face_scores, mode)
        pooled, ids = pool_templates(features, meta.templates, meta.medias)
        results[mode.upper()] = pair_scores(pooled, ids, meta.p1, meta.p2, chunk)
    return results


def identification_run(meta, galleries, embeddings, flip_embeddings=None, mode=DEFAULT_MODE, max_rank=20):
    """``{gallery: result, ..., "mean": combined}`` for ``galleries = read_identification_meta(...)``."""
    features = image_features(embeddings, flip_embeddings, meta.face_scores, mode)
    pooled, ids = pool_templates(features, meta.templates, meta.medias)
    probe_templates, probe_subjects = galleries["probe"]
    probes = pooled[template_rows(ids, probe_templates, "1:N probe template")]
    results = {}
    for name, (templates, subjects) in galleries.items():
        if name != "probe":
            gallery = pooled[template_rows(ids, templates, f"1:N gallery {name} template")]
            results[name] = identification(probes, probe_subjects, gallery, subjects, max_rank)
    results["mean"] = combine_galleries(results.values())
    return results


def save_embeddings(path, embeddings, flip_embeddings, names):
    """The image embeddings (and flip embeddings) with their image names, for ``load_embeddings``."""
    arrays = {"embeddings": embeddings, "names": np.asarray(names)}
    if flip_embeddings is not None:
        arrays["flip_embeddings"] = flip_embeddings
    np.savez(path, **arrays)


def load_embeddings(path, names):
    """``(embeddings, flip_embeddings or None)`` saved for exactly the images ``names``, in that order."""
    with np.load(path) as data:
        if "embeddings" not in data or "names" not in data:
            raise DataError(f"{path}: not an IJB embeddings file (needs 'embeddings' and 'names')")
        if len(data["names"]) != len(names) or (data["names"] != np.asarray(names)).any():
            raise DataError(f"{path}: saved for other images than the meta files list ({len(data['names'])} images)")
        return data["embeddings"], (data["flip_embeddings"] if "flip_embeddings" in data else None)


def save_scores(path, scores, labels, identification_results=None):
    """``{name: pair scores}`` and the labels (and 1:N curves) as an npz that ``load_scores`` / plot-only read."""
    arrays = {"names": np.array(list(scores)), "scores": np.stack(list(scores.values())).astype(np.float32),
              "labels": np.asarray(labels, bool)}
    if identification_results:
        arrays.update({
            "id_names": np.array(list(identification_results)),
            "id_cmc": np.stack([r["cmc"] for r in identification_results.values()]),
            "id_fpir": np.stack([r["fpir"] for r in identification_results.values()]),
            "id_tpir": np.stack([r["tpir"] for r in identification_results.values()]),
        })
    np.savez(path, **arrays)


def load_scores(paths):
    """``({name: Roc}, {name: identification curves})`` from score npz files; names get the file stem."""
    rocs, curves = {}, {}
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"{path}: score file does not exist")
        stem = Path(path).stem
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: not a score file written by ijb --save-scores ({error})") from None
        if not hasattr(data, "files"):
            raise DataError(f"{path}: not a score file written by ijb --save-scores (a .npy array, not an .npz)")
        with data:
            if "scores" not in data and "id_names" not in data:
                raise DataError(f"{path}: not an IJB score file (no 'scores' nor 'id_names')")
            if "scores" in data:
                for name, score in zip(data["names"], data["scores"]):
                    rocs[f"{stem}:{name}"] = Roc(score, data["labels"])
            if "id_names" in data:
                for i, name in enumerate(data["id_names"]):
                    curves[f"{stem}:{name}"] = {"cmc": data["id_cmc"][i], "fpir": data["id_fpir"][i],
                                                "tpir": data["id_tpir"][i]}
    return rocs, curves


def _figure(panels):
    """A new figure of ``panels`` side by side, drawn with the Agg canvas (no pyplot, no global backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4 * panels, 5.0))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, panels, squeeze=False)[0]


def _rate_axes(ax, y_values):
    """A 0..1 rate on y, from the tenth below the lowest drawn value, with a grid on major and minor ticks."""
    from matplotlib.ticker import MultipleLocator

    finite = np.concatenate([np.ravel(v) for v in y_values] or [np.zeros(0)])
    finite = finite[np.isfinite(finite)]
    low = max(0.0, np.floor(10 * finite.min()) / 10 - 0.05) if finite.size else 0.0
    ax.set_ylim(low, 1.005)
    ax.yaxis.set_minor_locator(MultipleLocator(0.05 if 1 - low > 0.3 else 0.01))
    ax.grid(True, which="major", linestyle="-", linewidth=0.6, alpha=0.6)
    ax.grid(True, which="minor", linestyle=":", linewidth=0.5, alpha=0.5)


def _powers_of_ten(ax, low, high):
    """A log x axis from ``low`` to ``high`` labelled at each power of ten (10^-6 ... 10^0), unlabelled minor
    ticks between."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.xaxis.set_major_locator(LogLocator(base=10, numticks=20))
    ax.xaxis.set_major_formatter(LogFormatterSciNotation(base=10))
    ax.xaxis.set_minor_locator(LogLocator(base=10, subs=np.arange(2, 10), numticks=20))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_roc(rocs, path, title="ROC on IJB"):
    """ROC curves of ``{name: Roc}``, TAR against FAR on a log axis labelled at powers of ten, each labelled
    with its AUC, written to ``path``."""
    fig, (ax,) = _figure(1)
    low = min(FARS)
    tars = []
    for name, roc in rocs.items():
        far, tar = roc.curve(min_far=low)
        keep = far > 0
        ax.plot(far[keep], tar[keep], lw=1.2, label=f"{name} (AUC {100 * roc.auc():.2f}%)")
        tars.append(tar[keep])
    _powers_of_ten(ax, low, 1.0)
    _rate_axes(ax, tars)
    ax.set(xlabel="False Accept Rate (FAR)", ylabel="True Accept Rate (TAR)", title=title)
    ax.legend(loc="lower right", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    savefig_atomic(fig, path)
    return str(path)


def plot_cmc(results, path, title="Identification on IJB"):
    """CMC (identification rate at rank 1..R) and TPIR at FPIR (log axis labelled at powers of ten) of
    ``{name: identification result}``, two panels, written to ``path``."""
    from matplotlib.ticker import MaxNLocator

    fig, (left, right) = _figure(2)
    ranks = 1
    for name, result in results.items():
        ranks = max(ranks, len(result["cmc"]))
        left.plot(np.arange(1, len(result["cmc"]) + 1), result["cmc"], marker=".", lw=1.2, label=name)
        right.plot(result["fpir"], result["tpir"], lw=1.2, label=name)
    left.set(xlabel="rank", ylabel="identification rate", title=f"{title}: CMC", xlim=(0.5, ranks + 0.5))
    left.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    fpirs = np.concatenate([np.ravel(result["fpir"]) for result in results.values()] or [np.ones(1)])
    fpirs = fpirs[np.isfinite(fpirs) & (fpirs > 0)]
    _powers_of_ten(right, 10 ** np.floor(np.log10(fpirs.min())) if fpirs.size else 1e-4, 1.0)
    right.set(xlabel="False Positive Identification Rate (FPIR)", ylabel="True Positive Identification Rate (TPIR)",
              title=f"{title}: TPIR at FPIR")
    for ax, key in ((left, "cmc"), (right, "tpir")):
        _rate_axes(ax, [result[key] for result in results.values()])
        ax.legend(loc="lower right", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    savefig_atomic(fig, path)
    return str(path)

"""IJB-B / IJB-C evaluation: 1:1 template verification (TAR at FAR, ROC) and 1:N identification (CMC, TPIR).

The meta files (templates, medias, pairs, landmarks, galleries) are read by ``ijb_meta.py``; the embeddings come
from ``inference.embed.embed_files``.

Pipeline: embeddings of each aligned image and of its mirror (kept apart, so one pass serves every mode) ->
image features by the mode ``N{0,1}D{0,1}F{0,1}`` (the seed's naming: F1 adds the flip embedding, N1
L2-normalises each image's embedding, D1 multiplies it by the detector's faceness score, in that order; the
default is ``N0D1F1``; insightface's scripts name the norm flag the other way round, their ``N1`` keeps the
norm) -> template features (mean over the images of a media, sum over the medias, L2-normalise) -> cosine
scores of the template pairs -> TAR at FAR and AUC, or identification against the two galleries.

TAR at FAR follows insightface: the ROC point whose FAR is nearest the target, the highest TAR among points
of that FAR (``rule="at_most"`` instead takes the best point with FAR <= target).

Example:
    >>> rng = np.random.default_rng(0)
    >>> labels = np.r_[np.ones(100), np.zeros(1000)].astype(bool)
    >>> scores = np.where(labels, 1.0, 0.0) + rng.normal(0, 0.3, labels.size)
    >>> roc = Roc(scores, labels)
    >>> print(markdown_table({"toy": roc}, fars=(1e-2, 1e-1)))
    | method | 1e-02 | 1e-01 | AUC |
    |---|---|---|---|
    | toy | 86.00 | 98.00 | 99.44 |
"""

import os
import re
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
    """The ROC of ``scores`` for ``labels`` (True = genuine), sorted once; ties are one ROC step.

    ``tar_at_far``, ``auc`` and ``curve`` read it without re-sorting. Impostors are kept in descending order;
    accepting the ``k`` highest impostors is possible for ``k = 0``, ``N`` and every ``k`` at a change of
    impostor score, and then the best TAR is the share of genuine scores above the next impostor.
    """

    def __init__(self, scores, labels):
        scores, labels = np.asarray(scores, dtype=np.float32), np.asarray(labels).astype(bool)
        if scores.shape != labels.shape or scores.ndim != 1:
            raise DataError(f"Roc: scores {scores.shape} and labels {labels.shape} differ")
        if labels.all() or not labels.any():
            raise DataError("Roc: needs both genuine and impostor scores")
        if not np.isfinite(scores).all():
            raise DataError("Roc: scores must be finite")
        self.genuine = np.sort(scores[labels])
        self.impostor = np.sort(scores[~labels])[::-1]  # descending
        n = len(self.impostor)
        changes = np.flatnonzero(self.impostor[1:] != self.impostor[:-1]) + 1
        self.accepted = np.r_[0, changes, n]  # possible counts of accepted impostors

    def _tar(self, counts):
        """Best TAR accepting exactly ``counts`` impostors (all of them: TAR 1)."""
        counts = np.asarray(counts)
        below = self.impostor[np.minimum(counts, len(self.impostor) - 1)]
        above = len(self.genuine) - np.searchsorted(self.genuine, below, side="right")
        return np.where(counts >= len(self.impostor), 1.0, above / len(self.genuine))

    def _counts(self, fars, rule):
        target = np.asarray(fars, dtype=np.float64) * len(self.impostor)
        at_most = np.searchsorted(self.accepted, target, side="right") - 1
        if rule == "at_most":
            return self.accepted[at_most]
        if rule != "nearest":
            raise DataError(f"TAR at FAR rule {rule!r}: expected 'nearest' or 'at_most'")
        above = np.minimum(at_most + 1, len(self.accepted) - 1)
        low, high = self.accepted[at_most] / len(self.impostor), self.accepted[above] / len(self.impostor)
        fars = np.asarray(fars, dtype=np.float64)
        return np.where(np.abs(high - fars) <= np.abs(low - fars), self.accepted[above], self.accepted[at_most])

    def tar_at_far(self, fars=FARS, rule="nearest"):
        """TAR (float64 array) at each FAR of ``fars``; see the module docstring for ``rule``."""
        return self._tar(self._counts(fars, rule))

    def thresholds(self, fars=FARS, rule="nearest"):
        """The score a pair must exceed at each FAR of ``fars``."""
        counts = self._counts(fars, rule)
        below = self.impostor[np.minimum(counts, len(self.impostor) - 1)]
        return np.where(counts >= len(self.impostor), -np.inf, below)

    def auc(self):
        """Area under the ROC: P(genuine > impostor) + P(tie) / 2 (the trapezoid rule on this ROC)."""
        ascending = self.impostor[::-1]
        below = np.searchsorted(ascending, self.genuine, side="left")
        ties = np.searchsorted(ascending, self.genuine, side="right") - below
        return float((below.sum() + 0.5 * ties.sum()) / (len(self.genuine) * len(self.impostor)))

    def curve(self, points=400, min_far=None):
        """``(far, tar)`` at about ``points`` ROC points, log-spaced in FAR from ``min_far`` (default 1 / N) to 1."""
        n = len(self.impostor)
        low = np.log10(min_far if min_far else 1.0 / n)
        counts = np.unique(self._counts(np.r_[0.0, np.logspace(low, 0, points)], "at_most"))
        return counts / n, self._tar(counts)


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
    """Area under the ROC of ``scores`` for ``labels``."""
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
def fpir_grid(low=-4, points=41):
    """FPIRs log-spaced from ``10**low`` to 1 whose decades are exact (``floor(FPIR x n)`` is then exact too)."""
    return 10.0 ** np.round(np.linspace(low, 0, points), 6)


def identification(probe_features, probe_subjects, gallery_features, gallery_subjects, max_rank=20, fpirs=None):
    """Open-set identification of probe templates against one gallery (one template per subject).

    Returns a dict: ``cmc`` (hit rate at ranks 1..``max_rank`` over the mated probes, ties counted in the
    probe's favour), ``hits`` (their counts), ``mated`` and ``non_mated`` (probe counts), ``fpir``, ``tpir``
    (a mated probe counts at an FPIR when its own subject ranks first and scores above the threshold that
    ``floor(FPIR x non-mated)`` non-mated probes' best scores reach, as insightface) and ``thresholds``.
    ``fpirs`` defaults to 41 points log-spaced over 1e-4..1 (``fpir_grid()``).

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
    mated_scores = similarity[mated, column[mated]]
    rank = (similarity[mated] > mated_scores[:, None]).sum(axis=1)  # 0 = first
    ranks = np.arange(1, max_rank + 1)
    hits = (rank[None, :] < ranks[:, None]).sum(axis=1)
    best_non_mated = np.sort(similarity[~mated].max(axis=1))[::-1] if (~mated).any() else np.zeros(0)
    if len(best_non_mated):
        thresholds = best_non_mated[np.maximum(np.floor(fpirs * len(best_non_mated)).astype(int) - 1, 0)]
        correct = (rank == 0)[None, :] & (mated_scores[None, :] > thresholds[:, None])
        tpir = correct.sum(axis=1) / max(mated.sum(), 1)
    else:
        thresholds, tpir = np.full(len(fpirs), np.nan), np.full(len(fpirs), np.nan)
    return {"cmc": hits / max(mated.sum(), 1), "hits": hits, "mated": int(mated.sum()),
            "non_mated": int((~mated).sum()), "fpir": fpirs, "tpir": tpir, "thresholds": thresholds}


def combine_galleries(results):
    """The galleries' mean: CMC over all their mated probes, TPIR averaged (insightface's 'mean' row)."""
    results = list(results)
    hits = sum(r["hits"] for r in results)
    mated = sum(r["mated"] for r in results)
    return {"cmc": hits / max(mated, 1), "hits": hits, "mated": mated,
            "non_mated": sum(r["non_mated"] for r in results), "fpir": results[0]["fpir"],
            "tpir": np.mean([r["tpir"] for r in results], axis=0),
            "thresholds": np.full(len(results[0]["fpir"]), np.nan)}


def identification_table(results, ranks=RANKS, fpirs=FPIRS):
    """A markdown table of CMC (%) at ``ranks`` and TPIR (%) at ``fpirs`` for ``{name: identification result}``."""
    head = [f"top-{r}" for r in ranks] + [f"TPIR@{f:.0e}" for f in fpirs]
    lines = ["| gallery | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name, result in results.items():
        cmc = [result["cmc"][r - 1] if r <= len(result["cmc"]) else np.nan for r in ranks]
        tpir = [np.interp(np.log10(f), np.log10(result["fpir"]), result["tpir"]) for f in fpirs]
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


def plot_roc(rocs, path, title="ROC on IJB"):
    """ROC curves (log FAR) of ``{name: Roc}`` with their AUC, written to ``path`` (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    low = min(FARS)
    for name, roc in rocs.items():
        far, tar = roc.curve(min_far=low)
        keep = far > 0
        ax.plot(far[keep], tar[keep], lw=1, label=f"{name} (AUC {100 * roc.auc():.2f}%)")
    ax.set(xscale="log", xlim=(low, 1), ylim=(0, 1.0), xlabel="False Accept Rate", ylabel="True Accept Rate",
           title=title)
    ax.grid(linestyle="--", linewidth=0.5)
    ax.legend(loc="lower right", fontsize="x-small")
    fig.tight_layout()
    savefig_atomic(fig, path)
    plt.close(fig)
    return str(path)


def plot_cmc(results, path, title="Identification on IJB"):
    """CMC (rank 1..R) and TPIR vs FPIR of ``{name: identification result}``, two panels, written to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, result in results.items():
        left.plot(np.arange(1, len(result["cmc"]) + 1), result["cmc"], marker=".", lw=1, label=name)
        right.plot(result["fpir"], result["tpir"], lw=1, label=name)
    left.set(xlabel="rank", ylabel="identification rate", title=f"{title}: CMC", ylim=(0, 1.02))
    right.set(xscale="log", xlabel="FPIR", ylabel="TPIR", title=f"{title}: TPIR at FPIR", ylim=(0, 1.02))
    for ax in (left, right):
        ax.grid(linestyle="--", linewidth=0.5)
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    savefig_atomic(fig, path)
    plt.close(fig)
    return str(path)

"""Folder evaluation (the seed's ``eval_folder.py``): top-1 against class centers and TPR at FPR on any
dataset ``open_source`` reads (class folders, ``.rec``, list files).

Every image is embedded (L2-normalised); a class center is the normalised mean embedding of its images.
Each image is scored against every center by cosine similarity:

- its own class's center leaves the image out (the mean of the class's other images), so an image never
  matches itself and small classes are not flattered; classes of one image therefore give no genuine score
  and no top-1 trial, but their centers still compete as impostors;
- genuine scores: image vs its own (leave-one-out) center; impostor scores: image vs every other center;
- top-1: the image's best-scoring center is its own class;
- TPR at FPR, AUC: ``keras_insightface.evaluation.ijb.Roc`` over the genuine and impostor scores.

Scores are computed ``chunk_size`` images at a time; the impostor scores (images x (classes - 1) float32)
are kept for the ROC.

Example:
    >>> import numpy as np
    >>> emb = np.eye(3)[[0, 0, 1, 1, 2, 2]]
    >>> result = evaluate_embeddings(emb, [0, 0, 1, 1, 2, 2], fprs=[0.1])
    >>> result["top1"], result["tpr"], result["auc"]
    (1.0, {0.1: 1.0}, 1.0)
"""

import os

import numpy as np

from keras_insightface.errors import DataError

FPRS = (1e-4, 1e-3, 1e-2)


def evaluate_embeddings(embeddings, labels, fprs=FPRS, chunk_size=1024, name="embeddings"):
    """Top-1 against leave-one-out class centers, TPR at each FPR of ``fprs`` and AUC of ``embeddings``.

    Returns ``{"images", "classes", "trials", "top1", "tpr": {fpr: tpr}, "auc"}``; ``trials`` counts the
    images whose class has another image (the top-1 and genuine-score population). ``name`` names the
    data in errors.

    Example:
        >>> emb = [[1, 0], [1, 0.2], [0, 1], [0.9, 0.1]]
        >>> evaluate_embeddings(emb, [0, 0, 1, 1])["top1"]  # the last image looks like class 0
        0.75
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or labels.shape != (len(embeddings),):
        raise DataError(
            f"{name}: expected (N, D) embeddings and N labels, received {embeddings.shape} and {labels.shape}"
        )
    if not np.isfinite(embeddings).all():
        raise DataError(f"{name}: embeddings must be finite")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    if (norms == 0).any():
        raise DataError(f"{name}: {int((norms == 0).sum())} embeddings are all zeros")
    embeddings = embeddings / norms
    classes, index, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"{name}: needs at least 2 classes, found {len(classes)}")
    trial = counts[index] > 1
    if not trial.any():
        raise DataError(f"{name}: every class has a single image; needs classes of 2 or more")
    sums = np.zeros((len(classes), embeddings.shape[1]), np.float64)
    np.add.at(sums, index, embeddings)
    centers = (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
    correct, genuine, impostor = 0, [], []
    for start in range(0, len(embeddings), max(int(chunk_size), 1)):
        rows = slice(start, start + max(int(chunk_size), 1))
        emb, own, keep = embeddings[rows], index[rows], trial[rows]
        scores = emb @ centers.T
        others = np.ones_like(scores, dtype=bool)
        others[np.arange(len(emb)), own] = False
        impostor.append(scores[others])
        rest = sums[own] - emb  # the class without this image
        rest_norm = np.linalg.norm(rest, axis=1)
        own_score = np.where(keep, np.einsum("ij,ij->i", emb, rest) / np.maximum(rest_norm, 1e-12), -np.inf)
        best_other = np.where(others, scores, -np.inf).max(axis=1)
        correct += int((own_score[keep] > best_other[keep]).sum())
        genuine.append(own_score[keep].astype(np.float32))
    from keras_insightface.evaluation.ijb import Roc

    genuine, impostor = np.concatenate(genuine), np.concatenate(impostor)
    roc = Roc(np.concatenate([genuine, impostor]), np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)])
    fprs = [float(f) for f in fprs]
    return {
        "images": len(embeddings),
        "classes": len(classes),
        "trials": int(trial.sum()),
        "top1": correct / int(trial.sum()),
        "tpr": dict(zip(fprs, roc.tar_at_far(fprs).tolist())),
        "auc": roc.auc(),
    }


def embed_source(data, model, batch_size=64, flip=False, num_workers=None):
    """``(embeddings, labels)`` of every image of ``data`` (a path for ``open_source``, or a source) by
    ``model`` (anything ``inference.embedders.open_model`` opens)."""
    from keras_insightface.data.sources import open_source
    from keras_insightface.inference.embed import iter_embeddings
    from keras_insightface.inference.embedders import open_model

    source = open_source(data) if isinstance(data, (str, os.PathLike)) else data
    if len(source) == 0:
        raise DataError(f"{getattr(source, 'name', data)}: no images to evaluate")
    model = open_model(model)
    labels, embeddings = [], []
    for batch_labels, batch_embeddings in iter_embeddings(source, model, batch_size, flip, num_workers):
        labels.append(batch_labels)
        embeddings.append(batch_embeddings)
    return np.concatenate(embeddings), np.concatenate(labels)


def eval_folder(data, model, batch_size=64, flip=False, num_workers=None, fprs=FPRS, chunk_size=1024):
    """Embed every image of ``data`` with ``model`` and return ``evaluate_embeddings``'s result for them.

    Example:
        >>> eval_folder("datasets/my_faces", "r50_basic.keras", fprs=[1e-4, 1e-3])  # doctest: +SKIP
    """
    embeddings, labels = embed_source(data, model, batch_size, flip, num_workers)
    return evaluate_embeddings(embeddings, labels, fprs, chunk_size, name=str(data))


def results_table(result, name="model"):
    """One markdown row of ``result``: top-1, TPR at each FPR and AUC.

    Example:
        >>> print(results_table({"top1": 0.9, "tpr": {0.001: 0.8}, "auc": 0.99}, "r50"))
        | model | top1 | TPR@FPR=1e-03 | AUC |
        |---|---|---|---|
        | r50 | 0.9000 | 0.8000 | 0.9900 |
    """
    header = ["model", "top1", *(f"TPR@FPR={fpr:.0e}" for fpr in result["tpr"]), "AUC"]
    cells = [name, f"{result['top1']:.4f}", *(f"{tpr:.4f}" for tpr in result["tpr"].values()), f"{result['auc']:.4f}"]
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(cells) + " |"])

"""Face verification on ``.bin`` pairs: flip-summed embeddings, cosine scores, and both accuracy conventions.

- The seed system's metric: the best accuracy over thresholds taken from the highest 10% of impostor
  scores, reported with that threshold (``best_threshold_accuracy``).
- insightface's metric: 10-fold accuracy mean +- std, thresholds 0..4 step 0.01 on the squared L2 distance
  of normalised embeddings, each fold's threshold chosen on the other nine (``kfold_accuracy``).
- insightface's VAL@FAR=1e-3: the genuine accept rate at the threshold where the other nine folds reach that
  false accept rate, 10-fold mean +- std, and the FAR it gives (``val_at_far``).
- insightface's XNorm: the mean L2 norm of the un-normalised embeddings, each view (image, mirror) counted
  on its own (``mean_norm``); a training-health number, not an accuracy.

The model is anything ``inference.embedders.open_model`` opens: a Keras model, a model file (``.keras``, seed
``.h5``, ONNX, TorchScript) or a callable ``uint8 NHWC batch -> (B, D)``.

Example:
    >>> from keras_insightface.evaluation.verification import evaluate_bin
    >>> result = evaluate_bin(basic_model, "datasets/lfw.bin")      # doctest: +SKIP
    >>> result["accuracy"], result["threshold"], result["kfold_mean"], result["val"], result["xnorm"]  # doctest: +SKIP
"""

import os

import keras
import numpy as np

from keras_insightface.data.binpack import decode_bin_images, load_bin
from keras_insightface.errors import DataError
from keras_insightface.inference.embed import embed_views, l2_normalize
from keras_insightface.inference.embedders import open_model


def mean_norm(*views):
    """insightface's XNorm: the mean L2 norm of every row of the un-normalised embedding arrays ``views``.

    Example:
        >>> mean_norm(np.array([[3.0, 4.0], [0.0, 1.0]]), np.array([[0.0, 3.0]]))
        3.0
    """
    return float(np.mean(np.concatenate([np.linalg.norm(np.asarray(v, "float64"), axis=-1) for v in views])))


def pair_scores(embeddings):
    """Cosine similarity of pairs (2i, 2i+1)."""
    emb = l2_normalize(np.asarray(embeddings, dtype="float64"))
    return np.sum(emb[0::2] * emb[1::2], axis=-1)


def best_threshold_accuracy(scores, issame):
    """The seed's metric: max accuracy over thresholds from the top 10% of impostor scores, and that threshold.

    A pair is predicted "same" when its score is above the threshold.
    """
    scores, issame = np.asarray(scores, dtype="float64"), np.asarray(issame, dtype=bool)
    genuine, impostor = np.sort(scores[issame]), np.sort(scores[~issame])
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError("best_threshold_accuracy needs both genuine and impostor pairs")
    candidates = impostor[-max(int(0.1 * len(impostor)), 1) :]
    genuine_above = len(genuine) - np.searchsorted(genuine, candidates, side="right")
    impostor_at_or_below = np.searchsorted(impostor, candidates, side="right")
    correct = genuine_above + impostor_at_or_below
    best = int(np.argmax(correct))
    return float(correct[best] / len(scores)), float(candidates[best])


def _kfold_indices(count, n_folds):
    """Contiguous folds, the first ``count % n_folds`` one longer (sklearn ``KFold(shuffle=False)``)."""
    sizes = np.full(n_folds, count // n_folds)
    sizes[: count % n_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(n_folds)]


def kfold_accuracy(embeddings1, embeddings2, issame, n_folds=10, thresholds=None):
    """insightface's verification accuracy: mean and std over folds; distance = squared L2 of unit vectors."""
    issame = np.asarray(issame, dtype=bool)
    if len(issame) < n_folds:
        raise ValueError(f"kfold_accuracy needs at least {n_folds} pairs, received {len(issame)}")
    thresholds = np.arange(0, 4, 0.01) if thresholds is None else np.asarray(thresholds)
    diff = l2_normalize(np.asarray(embeddings1, "float64")) - l2_normalize(np.asarray(embeddings2, "float64"))
    dist = np.sum(np.square(diff), axis=1)
    predicted = dist[None, :] < thresholds[:, None]  # (thresholds, pairs)
    correct = predicted == issame[None, :]
    accuracies = []
    for test in _kfold_indices(len(issame), n_folds):
        train = np.setdiff1d(np.arange(len(issame)), test)
        best = int(np.argmax(correct[:, train].mean(axis=1)))
        accuracies.append(correct[best, test].mean())
    return float(np.mean(accuracies)), float(np.std(accuracies))


def _far_threshold(thresholds, far, far_target):
    """The threshold where the non-decreasing ``far`` curve reaches ``far_target``, linearly interpolated.

    insightface interpolates with ``scipy.interpolate.interp1d(far, thresholds, kind="slinear")``, which newer
    scipy refuses for repeated FAR values; this is that interpolation between the last threshold at or below the
    target (the largest of equal FARs) and the next one. A curve that never reaches the target gives 0.
    """
    if far[-1] < far_target:
        return 0.0
    low = int(np.searchsorted(far, far_target, side="right")) - 1
    if low < 0:
        return float(thresholds[0])
    if far[low] == far_target or low == len(far) - 1:
        return float(thresholds[low])
    weight = (far_target - far[low]) / (far[low + 1] - far[low])
    return float(thresholds[low] + weight * (thresholds[low + 1] - thresholds[low]))


def _val_far(threshold, dist, issame):
    """Genuine accept rate and false accept rate of ``dist < threshold`` (0 for a fold without that kind)."""
    accepted = dist < threshold
    return accepted[issame].sum() / max(issame.sum(), 1), accepted[~issame].sum() / max((~issame).sum(), 1)


def val_at_far(embeddings1, embeddings2, issame, far_target=1e-3, n_folds=10, thresholds=None):
    """insightface's VAL@FAR: ``(val mean, val std, far mean)`` over ``n_folds`` contiguous folds.

    Each fold's threshold on the squared L2 distance of unit vectors (grid 0..4 step 0.001) is where the other
    folds' false accept rate reaches ``far_target``; VAL and FAR are then measured on the fold.

    Example:
        >>> angles = np.array([[0.0, 0.5 + 0.1 * k] for k in range(10)]).ravel()  # genuine 0, impostor k: 0.5 + 0.1k
        >>> e1, e2 = np.tile([1.0, 0.0], (20, 1)), np.stack([np.cos(angles), np.sin(angles)], axis=1)
        >>> val_at_far(e1, e2, [True, False] * 10)  # fold 0's impostor is closer than any of the other folds'
        (1.0, 0.0, 0.1)
    """
    issame = np.asarray(issame, dtype=bool)
    if len(issame) < n_folds:
        raise ValueError(f"val_at_far needs at least {n_folds} pairs, received {len(issame)}")
    thresholds = np.arange(0, 4, 0.001) if thresholds is None else np.asarray(thresholds, dtype="float64")
    diff = l2_normalize(np.asarray(embeddings1, "float64")) - l2_normalize(np.asarray(embeddings2, "float64"))
    dist = np.sum(np.square(diff), axis=1)
    vals, fars = [], []
    for test in _kfold_indices(len(issame), n_folds):
        train = np.setdiff1d(np.arange(len(issame)), test)
        impostor = np.sort(dist[train][~issame[train]])
        far_train = np.searchsorted(impostor, thresholds, side="left") / max(len(impostor), 1)  # share of dist < t
        val, far = _val_far(_far_threshold(thresholds, far_train, far_target), dist[test], issame[test])
        vals.append(val)
        fars.append(far)
    return float(np.mean(vals)), float(np.std(vals)), float(np.mean(fars))


def evaluate_embeddings(embeddings, issame, xnorm=None):
    """All metrics for flip-summed embeddings of a pair list: accuracy, threshold, kfold_mean, kfold_std, val,
    val_std, far (VAL@FAR=1e-3) and xnorm (``mean_norm`` of ``embeddings`` unless given)."""
    scores = pair_scores(embeddings)
    accuracy, threshold = best_threshold_accuracy(scores, issame)
    kfold_mean, kfold_std = kfold_accuracy(embeddings[0::2], embeddings[1::2], issame)
    val, val_std, far = val_at_far(embeddings[0::2], embeddings[1::2], issame)
    return {
        "accuracy": accuracy, "threshold": threshold, "kfold_mean": kfold_mean, "kfold_std": kfold_std,
        "val": val, "val_std": val_std, "far": far, "xnorm": mean_norm(embeddings) if xnorm is None else xnorm,
    }


class VerificationSet:
    """A ``.bin`` pack decoded once into memory: ``images`` uint8 NHWC and ``issame``."""

    def __init__(self, bin_path):
        self.path = str(bin_path)
        self.name = os.path.splitext(os.path.basename(self.path))[0]
        encoded, self.issame = load_bin(self.path)
        if len(self.issame) < 10 or self.issame.all() or not self.issame.any():
            raise DataError(
                f"{self.path}: {len(self.issame)} pairs ({int(self.issame.sum())} genuine); verification needs"
                " at least 10 pairs with both genuine and impostor ones"
            )
        self.images = decode_bin_images(encoded, self.path)

    def evaluate(self, basic_model, batch_size=64, flip=True):
        """``evaluate_embeddings`` of the flip-summed embeddings; XNorm over each view, as insightface."""
        views = embed_views(basic_model, self.images, batch_size, flip)
        return evaluate_embeddings(sum(views), self.issame, xnorm=mean_norm(*views))


def evaluate_bin(basic_model, bin_path, batch_size=64, flip=True):
    """Evaluate ``basic_model`` (Keras model or batch callable) on one ``.bin`` pack: ``evaluate_embeddings``' dict."""
    return VerificationSet(bin_path).evaluate(basic_model, batch_size, flip)


class eval_callback(keras.callbacks.Callback):  # noqa: N801 - the seed system's public name
    """Evaluate a basic model on a ``.bin`` pack every ``eval_freq`` epochs (and every ``eval_every_steps``
    batches, when set) during ``fit``.

    Adds ``<name>`` (seed accuracy), ``<name>_thresh``, ``<name>_kfold`` and ``<name>_kfold_std`` to the
    epoch logs, so the history JSON and best-model saving see them.

    Example:
        >>> cb = eval_callback(basic_model, "datasets/lfw.bin", batch_size=128)   # doctest: +SKIP
        >>> train_model.fit(data, epochs=5, callbacks=[cb])                       # doctest: +SKIP
    """

    def __init__(self, basic_model, test_bin_file, batch_size=64, flip=True, eval_freq=1, eval_every_steps=0,
                 verbose=True):
        super().__init__()
        self.verbose = verbose
        self.basic_model, self.batch_size, self.flip, self.eval_freq = basic_model, batch_size, flip, eval_freq
        self.embedder = open_model(basic_model)  # split over every device when the model is distributed
        self.eval_every_steps = int(eval_every_steps)
        self.dataset = VerificationSet(test_bin_file)
        self.name = self.dataset.name
        self.step_results = []

    def _evaluate(self, where):
        result = self.dataset.evaluate(self.embedder, self.batch_size, self.flip)
        if self.verbose:
            print(
                f"\n>>>> {self.name} evaluation{where}: accuracy {result['accuracy']:.4f} (threshold "
                f"{result['threshold']:.4f}), 10-fold {result['kfold_mean']:.4f} +- {result['kfold_std']:.4f}"
            )
        return result

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        """With ``eval_every_steps`` N: also evaluate after every N-th batch of an epoch (printed, and kept in
        ``step_results`` as ``(epoch, batches done, result dict)``), as the seed's batch-level evaluation. It runs
        at the next batch's start (a batch-end hook would make Keras wait for every step); the epoch's last
        batches are covered by the epoch-end evaluation."""
        if not batch or not self.eval_every_steps or batch % self.eval_every_steps:
            return
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()  # mid-epoch, the JAX trainer holds the current weights outside the model
        result = self._evaluate(f" at epoch {self.epoch + 1}, batch {batch}")
        self.step_results.append((self.epoch + 1, batch, result))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (epoch + 1) % self.eval_freq:
            return
        if not np.isfinite(logs.get("loss", 0.0)):
            return
        result = self._evaluate("")
        logs[self.name] = result["accuracy"]
        logs[self.name + "_thresh"] = result["threshold"]
        logs[self.name + "_kfold"] = result["kfold_mean"]
        logs[self.name + "_kfold_std"] = result["kfold_std"]

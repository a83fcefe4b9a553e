"""Face verification on ``.bin`` pairs: flip-summed embeddings, cosine scores, and both accuracy conventions.

- The seed system's metric: the best accuracy over thresholds taken from the highest 10% of impostor
  scores, reported with that threshold (``best_threshold_accuracy``).
- insightface's metric: 10-fold accuracy mean +- std, thresholds 0..4 step 0.01 on the squared L2 distance
  of normalised embeddings, each fold's threshold chosen on the other nine (``kfold_accuracy``).

Example:
    >>> from keras_insightface.evaluation.verification import evaluate_bin
    >>> result = evaluate_bin(basic_model, "datasets/lfw.bin")      # doctest: +SKIP
    >>> result["accuracy"], result["threshold"], result["kfold_mean"]  # doctest: +SKIP
"""

import os

import keras
import numpy as np

from keras_insightface.data.binpack import decode_bin_images, load_bin
from keras_insightface.errors import DataError


def l2_normalize(x, axis=-1):
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def embed_images(basic_model, images, batch_size=64, flip=True):
    """Embeddings of uint8 NHWC ``images``; with ``flip`` the embedding of the mirrored face is added.

    Batches are padded to a fixed size so the compiled predict function is traced once.
    """
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size], dtype="float32")
        count = len(batch)
        if count < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - count, *batch.shape[1:]), batch.dtype)])
        emb = np.asarray(basic_model.predict_on_batch(batch), dtype="float32")
        if flip:
            emb = emb + np.asarray(basic_model.predict_on_batch(batch[:, :, ::-1]), dtype="float32")
        outputs.append(emb[:count])
    return np.concatenate(outputs)


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


def evaluate_embeddings(embeddings, issame):
    """Both metrics for flip-summed embeddings of a pair list."""
    scores = pair_scores(embeddings)
    accuracy, threshold = best_threshold_accuracy(scores, issame)
    kfold_mean, kfold_std = kfold_accuracy(embeddings[0::2], embeddings[1::2], issame)
    return {"accuracy": accuracy, "threshold": threshold, "kfold_mean": kfold_mean, "kfold_std": kfold_std}


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
        embeddings = embed_images(basic_model, self.images, batch_size, flip)
        return evaluate_embeddings(embeddings, self.issame)


def evaluate_bin(basic_model, bin_path, batch_size=64, flip=True):
    """Evaluate ``basic_model`` on one ``.bin`` pack; returns accuracy, threshold, kfold_mean, kfold_std."""
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

    def __init__(self, basic_model, test_bin_file, batch_size=64, flip=True, eval_freq=1, eval_every_steps=0):
        super().__init__()
        self.basic_model, self.batch_size, self.flip, self.eval_freq = basic_model, batch_size, flip, eval_freq
        self.eval_every_steps = int(eval_every_steps)
        self.dataset = VerificationSet(test_bin_file)
        self.name = self.dataset.name
        self.step_results = []

    def _evaluate(self, where):
        result = self.dataset.evaluate(self.basic_model, self.batch_size, self.flip)
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

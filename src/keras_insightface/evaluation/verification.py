"""Face verification on ``.bin`` pairs: flip-summed embeddings, cosine scores, and both accuracy conventions.

- The seed system's metric (its ``evals.py``): the best accuracy over thresholds taken from the highest 10%
  of impostor cosine scores, reported with that threshold (``best_threshold_accuracy``); the image and mirror
  embeddings are summed in float32 and L2-normalised in float32, as the seed's model outputs are
  (``pair_scores``); its line is ``seed_line``.
- insightface's metric (arcface_torch ``eval/verification.py``): 10-fold accuracy mean +- std, thresholds 0..4
  step 0.01 on the squared L2 distance of normalised embeddings, each fold's threshold chosen on the other
  nine (``kfold_accuracy``); the views are summed in float64, as insightface stores them; its lines are
  ``insightface_lines``.
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

import glob
import os

import keras
import numpy as np

from keras_insightface.data.binpack import decode_bin_images, kfold_sizes, load_bin
from keras_insightface.errors import DataError
from keras_insightface.hosts import is_primary
from keras_insightface.inference.embed import embed_views, l2_normalize
from keras_insightface.inference.embedders import open_model
from keras_insightface.saving import save_model as save_keras_model


def mean_norm(*views):
    """insightface's XNorm: the mean L2 norm of every row of the un-normalised embedding arrays ``views``.

    Example:
        >>> mean_norm(np.array([[3.0, 4.0], [0.0, 1.0]]), np.array([[0.0, 3.0]]))
        3.0
    """
    return float(np.mean(np.concatenate([np.linalg.norm(np.asarray(v, "float64"), axis=-1) for v in views])))


def pair_scores(embeddings):
    """Cosine similarity of pairs (2i, 2i+1), in the embeddings' float dtype (float32 model outputs: float32)."""
    emb = l2_normalize(embeddings)
    return np.sum(emb[0::2] * emb[1::2], axis=-1)


def half_split_weighted_cosine_similarity(aa, bb):
    """The seed's similarity of embeddings trained as two halves (``aa`` (N, D), ``bb`` (M, D) -> (N, M)): the
    two halves' dot products summed, over the summed products of their norms; the cosine when every half has
    the same norm.

    Example:
        >>> aa = np.array([[1.0, 0.0, 0.0, 2.0]])
        >>> half_split_weighted_cosine_similarity(aa, np.array([[1.0, 0.0, 0.0, 1.0]])).round(4).tolist()
        [[1.0]]
    """
    aa, bb = np.asarray(aa, "float64"), np.asarray(bb, "float64")
    half = aa.shape[-1] // 2
    top, bottom = (slice(None, half), slice(half, None))
    norms = [np.linalg.norm(x[:, part], axis=-1) for part in (top, bottom) for x in (aa, bb)]
    weights = np.outer(norms[0], norms[1]) + np.outer(norms[2], norms[3])
    return (aa[:, top] @ bb[:, top].T + aa[:, bottom] @ bb[:, bottom].T) / weights


def best_threshold_accuracy(scores, issame):
    """The seed's metric: max accuracy over thresholds from the top 10% of impostor scores, and that threshold.

    A pair is predicted "same" when its score is above the threshold. The candidates are the highest
    ``int(0.1 x impostors)`` impostor scores, every impostor score when that is 0 (the seed's ``ff[-0:]``); the
    first best is kept.
    """
    scores, issame = np.asarray(scores, dtype="float64"), np.asarray(issame, dtype=bool)
    genuine, impostor = np.sort(scores[issame]), np.sort(scores[~issame])
    if len(genuine) == 0 or len(impostor) == 0:
        raise ValueError("best_threshold_accuracy needs both genuine and impostor pairs")
    candidates = impostor[-int(0.1 * len(impostor)) :]
    genuine_above = len(genuine) - np.searchsorted(genuine, candidates, side="right")
    impostor_at_or_below = np.searchsorted(impostor, candidates, side="right")
    correct = genuine_above + impostor_at_or_below
    best = int(np.argmax(correct))
    return float(correct[best] / len(scores)), float(candidates[best])


def _kfold_indices(count, n_folds):
    """Contiguous folds, the first ``count % n_folds`` one longer (sklearn ``KFold(shuffle=False)``): the folds
    ``make_pairs`` lays its packs out by."""
    bounds = np.concatenate([[0], np.cumsum(kfold_sizes(count, n_folds))])
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


def evaluate_embeddings(embeddings, issame, xnorm=None, kfold_embeddings=None):
    """All metrics for flip-summed embeddings of a pair list: accuracy, threshold, kfold_mean, kfold_std, val,
    val_std, far (VAL@FAR=1e-3) and xnorm (``mean_norm`` of ``embeddings`` unless given).

    The seed's accuracy and threshold use ``embeddings``; insightface's 10-fold and VAL use
    ``kfold_embeddings`` when given (``evaluate_views`` passes the float64 sum there, as insightface's).
    """
    embeddings = np.asarray(embeddings)
    field = embeddings if kfold_embeddings is None else np.asarray(kfold_embeddings)
    accuracy, threshold = best_threshold_accuracy(pair_scores(embeddings), issame)
    kfold_mean, kfold_std = kfold_accuracy(field[0::2], field[1::2], issame)
    val, val_std, far = val_at_far(field[0::2], field[1::2], issame)
    return {
        "accuracy": accuracy, "threshold": threshold, "kfold_mean": kfold_mean, "kfold_std": kfold_std,
        "val": val, "val_std": val_std, "far": far, "xnorm": mean_norm(embeddings) if xnorm is None else xnorm,
    }


def evaluate_views(views, issame):
    """``evaluate_embeddings`` of the embedding views ``[image]`` or ``[image, mirror]``, each convention with
    its own flip sum: the seed's in the views' dtype (float32, as its TensorFlow model gave), insightface's in
    float64 (it copies each view into a float64 array first); XNorm over each view, as insightface."""
    return evaluate_embeddings(sum(views), issame, xnorm=mean_norm(*views),
                               kfold_embeddings=sum(np.asarray(view, np.float64) for view in views))


def insightface_lines(name, result, flip=True):
    """insightface's printout (arcface_torch ``eval/verification.py``) of one set: ``[name]XNorm: %f`` and
    ``[name]Accuracy-Flip: %1.5f+-%1.5f`` (``Accuracy`` without flip), the 10-fold mean and std.

    Example:
        >>> insightface_lines("lfw", {"xnorm": 21.5, "kfold_mean": 0.995, "kfold_std": 0.0031})
        ['[lfw]XNorm: 21.500000', '[lfw]Accuracy-Flip: 0.99500+-0.00310']
    """
    label = "Accuracy-Flip" if flip else "Accuracy"
    return [f"[{name}]XNorm: {result['xnorm']:f}",
            f"[{name}]{label}: {result['kfold_mean']:1.5f}+-{result['kfold_std']:1.5f}"]


def seed_line(name, accuracy, threshold, previous=0.0):
    """The seed's evaluation line (``evals.py`` ``eval_callback``), ``previous`` the best accuracy before.

    Example:
        >>> seed_line("lfw", 0.995, 0.2143)
        '>>>> lfw evaluation max accuracy: 0.995000, thresh: 0.214300, previous max accuracy: 0.000000'
    """
    return (f">>>> {name} evaluation max accuracy: {accuracy:f}, thresh: {threshold:f}, "
            f"previous max accuracy: {previous:f}")


def check_pairs(path, issame):
    """Refuse a pack verification cannot score: fewer than 10 pairs, or only one kind of pair."""
    if len(issame) < 10 or issame.all() or not issame.any():
        raise DataError(
            f"{path}: {len(issame)} pairs ({int(issame.sum())} genuine); verification needs at least 10 pairs with "
            "both genuine and impostor ones; make a balanced pack from identity folders or a .rec with "
            "keras-insightface convert make-bin <dataset> <pack.bin> --pairs <N>"
        )


def check_pack(path):
    """``check_pairs`` of the pack at ``path`` without decoding its images (a quick check before a run)."""
    check_pairs(path, load_bin(path)[1])


class VerificationSet:
    """A ``.bin`` pack decoded once into memory: ``images`` uint8 NHWC and ``issame``."""

    def __init__(self, bin_path):
        self.path = str(bin_path)
        self.name = os.path.splitext(os.path.basename(self.path))[0]
        encoded, self.issame = load_bin(self.path)
        check_pairs(self.path, self.issame)
        self.images = decode_bin_images(encoded, self.path)

    def embed(self, basic_model, batch_size=64, flip=True):
        """The un-normalised embedding views of every image (``embed_views``): ``[image]`` or ``[image, mirror]``."""
        return embed_views(basic_model, self.images, batch_size, flip)

    def evaluate(self, basic_model, batch_size=64, flip=True):
        """``evaluate_views`` of the embedding views: both conventions' flip sums, XNorm over each view."""
        return evaluate_views(self.embed(basic_model, batch_size, flip), self.issame)


def evaluate_bin(basic_model, bin_path, batch_size=64, flip=True):
    """Evaluate ``basic_model`` (Keras model or batch callable) on one ``.bin`` pack: ``evaluate_embeddings``' dict."""
    return VerificationSet(bin_path).evaluate(basic_model, batch_size, flip)


def _positive_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"eval_callback: {name} must be an integer >= {minimum}, received {value!r}")
    return int(value)


class eval_callback(keras.callbacks.Callback):  # noqa: N801 - the seed system's public name
    """The seed's verification callback: evaluate a basic model on a ``.bin`` pack at every epoch end and, with
    ``eval_freq`` > 1, also every ``eval_freq`` batches.

    Args:
        basic_model: the embedding model (a Keras model, a model file or a batch callable, see ``open_model``).
        test_bin_file: the ``.bin`` pack (or a ``VerificationSet`` already read); its file name without extension
            names the set (``test_names``).
        batch_size: images per embedding batch.
        save_model: with a name, the basic model is saved whenever the accuracy does not drop below the best so
            far, as ``<save_model>_basic_<test_names>_epoch_<E>_<accuracy %f>.keras`` (``E`` is the 1-based epoch,
            ``<E>_batch_<B>`` for a batch-level evaluation), replacing that set's previous best file. A name
            without a folder goes to ``checkpoints/``, as in the seed. Needs a Keras ``basic_model``.
        eval_freq: 1 evaluates at epoch ends only; N > 1 also evaluates after each batch whose 0-based index in
            the epoch is a positive multiple of N, as the seed (the epoch's last batch is left to the epoch-end
            evaluation, which sees the same weights).
        flip: add the embedding of the mirrored image.
        PCA_acc: also print insightface's 10-fold accuracy mean +- std (``kfold_accuracy``).
        eval_every_steps: (ours) also evaluate after every N batches of an epoch, counted as batches done; the
            batch frequency of ``eval_freq``, one batch earlier in each cycle. Give one of the two.
        epoch_freq: (ours) evaluate at the end of every ``epoch_freq``-th epoch only (the seed: every epoch).
        verbose: print each evaluation.

    Like the seed, it keeps ``test_names``, ``cur_acc`` and ``acc_thresh`` (the latest evaluation),
    ``max_accuracy``, ``embs`` (the latest flip-summed embeddings), ``tt`` / ``ff`` (sorted genuine / impostor
    cosine scores), ``test_issame`` and ``steps``; ``step_results`` holds ``(epoch, batch, result)`` of the
    batch-level evaluations. In ``fit`` it adds ``<name>`` (seed accuracy), ``<name>_thresh``, ``<name>_kfold``
    and ``<name>_kfold_std`` to the epoch logs, so the history JSON and best-model saving see them.
    Non-finite embeddings are reported and leave everything as it was, as in the seed.

    Example (``on_epoch_end`` prints ``>>>> lfw evaluation max accuracy: ..., thresh: ..., previous max
    accuracy: ...``, as the seed):
        >>> cb = eval_callback(basic_model, "datasets/lfw.bin")                  # doctest: +SKIP
        >>> cb.on_epoch_end(0)                                                    # doctest: +SKIP
        >>> cb = eval_callback(basic_model, "datasets/lfw.bin", 128, "r50", 2000) # doctest: +SKIP
        >>> train_model.fit(data, epochs=5, callbacks=[cb])                       # doctest: +SKIP
    """

    def __init__(self, basic_model, test_bin_file, batch_size=128, save_model=None, eval_freq=1, flip=True,
                 PCA_acc=False, *, eval_every_steps=0, epoch_freq=1, verbose=True):  # noqa: N803 - seed keyword
        super().__init__()
        self.eval_freq = _positive_int(eval_freq, "eval_freq", 1)
        eval_every_steps = _positive_int(eval_every_steps, "eval_every_steps", 0)
        if self.eval_freq > 1 and eval_every_steps:
            raise ValueError(
                f"eval_callback: eval_freq={eval_freq} and eval_every_steps={eval_every_steps} both set the batch-level"
                " evaluation frequency; give one of them"
            )
        self.eval_every_steps = eval_every_steps
        self.epoch_freq = _positive_int(epoch_freq, "epoch_freq", 1)
        self.batch_size = _positive_int(batch_size, "batch_size", 1)
        if save_model is not None and not hasattr(basic_model, "save"):
            raise ValueError(f"eval_callback: save_model={save_model!r} needs a Keras basic_model to save, received "
                             f"{type(basic_model).__name__}")
        self.basic_model, self.save_model, self.flip, self.PCA_acc, self.verbose = (
            basic_model, save_model, flip, PCA_acc, verbose
        )
        self.embedder = open_model(basic_model)  # split over every device when the model is distributed
        self.dataset = test_bin_file if isinstance(test_bin_file, VerificationSet) else VerificationSet(test_bin_file)
        self.name = self.test_names = self.dataset.name
        self.test_issame = self.dataset.issame
        self.steps = int(np.ceil(len(self.dataset.images) / self.batch_size))
        self.max_accuracy, self.cur_acc, self.acc_thresh = 0.0, 0.0, 0.0
        self.embs = self.tt = self.ff = None
        self.saved_path = None
        self.step_results = []
        self.epoch = 0

    def _evaluate(self, label):
        """Evaluate now (``label``: ``E`` or ``E_batch_B`` for the saved file name); None when the embeddings are
        not finite."""
        views = self.dataset.embed(self.embedder, self.batch_size, self.flip)
        embs = sum(views)
        if not np.isfinite(embs).all():
            if self.verbose:
                print(f"\n>>>> {self.name}: NaN or Inf in the embeddings, not evaluated")
            return None
        result = evaluate_views(views, self.test_issame)
        scores = pair_scores(embs)
        self.embs, self.tt, self.ff = embs, np.sort(scores[self.test_issame]), np.sort(scores[~self.test_issame])
        self.cur_acc, self.acc_thresh = result["accuracy"], result["threshold"]
        if self.verbose:
            line = "\n" + seed_line(self.name, self.cur_acc, self.acc_thresh, self.max_accuracy)
            if self.PCA_acc:
                line += f", 10-fold accuracy = {result['kfold_mean']:f} \u00b1 {result['kfold_std']:f}"
            print(line)
        if self.cur_acc >= self.max_accuracy:
            if self.verbose:
                print(f">>>> Improved = {self.cur_acc - self.max_accuracy:f}")
            self.max_accuracy = self.cur_acc
            if self.save_model:
                self._save_best(label)
        return result

    def _save_best(self, label):
        """Save the basic model as the set's best and remove the previous best file of the same prefix."""
        prefix = os.fspath(self.save_model)
        if not os.path.dirname(prefix):
            prefix = os.path.join("checkpoints", prefix)
        base = f"{prefix}_basic_{self.name}_epoch_"
        path = f"{base}{label}_{self.max_accuracy:f}.keras"
        if is_primary():
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_keras_model(self.basic_model, path)
            for old in glob.glob(glob.escape(base) + "*.keras"):
                if old != path:
                    os.remove(old)
            if self.verbose:
                print(f">>>> Saving model to: {path}")
        self.saved_path = path

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        """The batch-level evaluation, run at the next batch's start (a batch-end hook would make Keras wait for
        every step): with ``eval_freq`` N after the batch of index ``batch - 1`` when that is a positive multiple
        of N, with ``eval_every_steps`` N after ``batch`` batches when that is one."""
        frequency = self.eval_every_steps or (self.eval_freq if self.eval_freq > 1 else 0)
        position = batch if self.eval_every_steps else batch - 1
        if not frequency or position <= 0 or position % frequency:
            return
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()  # mid-epoch, the JAX trainer holds the current weights outside the model
        result = self._evaluate(f"{self.epoch + 1}_batch_{position}")
        if result is not None:
            self.step_results.append((self.epoch + 1, position, result))

    def on_epoch_end(self, epoch=0, logs=None):
        """Evaluate (also standalone: ``cb.on_epoch_end()`` evaluates once and prints); in ``fit`` the results go
        into ``logs``. An epoch whose loss is not finite is not evaluated."""
        if (epoch + 1) % self.epoch_freq:
            return
        if logs is not None and not np.isfinite(logs.get("loss", 0.0)):
            return
        result = self._evaluate(str(epoch + 1))
        if result is None or logs is None:
            return
        logs[self.name] = result["accuracy"]
        logs[self.name + "_thresh"] = result["threshold"]
        logs[self.name + "_kfold"] = result["kfold_mean"]
        logs[self.name + "_kfold_std"] = result["kfold_std"]

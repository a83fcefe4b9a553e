"""Offline triplet mining, the seed's ``samples_per_mining`` dataset: batches of ``[anchor, positive, negative]``
triples mined with the model being trained.

Each mining round draws a sample of identity groups (each identity's images shuffled and cut into groups of
``image_per_class``; ``samples`` images' worth of groups, or all), embeds it, and gives every image of the sample,
as an anchor, its hardest positive (the least similar image of its identity in the sample) and its hardest
negative (the most similar image of another identity), by cosine similarity as the seed did. The triples are laid
out ``[a0, p0, n0, a1, p1, n1, ...]`` in a random anchor order, the layout ``OfflineArcTripletLoss`` and
``OfflineTripletLoss`` read.

Example:
    >>> import numpy as np
    >>> labels = np.array([0, 0, 1, 1])
    >>> emb = np.array([[1, 0], [0.6, 0.8], [0.8, 0.6], [0, 1]], "float32")
    >>> positives, negatives = hardest_triplets(emb, labels)
    >>> positives.tolist(), negatives.tolist()
    ([1, 0, 3, 2], [2, 2, 1, 1])
"""

import numpy as np

from keras_insightface.data.loader import identity_groups
from keras_insightface.errors import DataError


def mining_size(samples_per_mining, num_images):
    """Images per mining round as the seed reads ``samples_per_mining``: > 1 a count, in (0, 1] a fraction of the
    dataset; at most the dataset."""
    if samples_per_mining <= 0:
        raise ValueError(f"samples_per_mining must be > 0 to mine triplets, received {samples_per_mining}")
    size = samples_per_mining if samples_per_mining > 1 else samples_per_mining * num_images
    return min(int(size), num_images)


def mining_sample(labels, image_per_class, size, rng):
    """Record indices of one mining round: ``size // image_per_class`` random identity groups of
    ``image_per_class`` images (each identity's images shuffled, its remainder left out), in a random order."""
    groups = identity_groups(labels, image_per_class, rng)
    if len(groups) < 2:
        raise DataError(f"offline triplet mining needs identities with at least {image_per_class} images; "
                        f"found {len(groups)} such group(s)")
    return rng.permutation(groups[: max(2, size // image_per_class)].reshape(-1))


def hardest_triplets(embeddings, labels, block=1024):
    """``(positive, negative)`` sample positions per anchor: the least similar image of the same identity (itself
    when it is alone) and the most similar image of another identity, by cosine of ``embeddings``."""
    emb = np.asarray(embeddings, np.float32)
    emb = emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
    labels = np.asarray(labels)
    positives, negatives = np.empty(len(emb), np.int64), np.empty(len(emb), np.int64)
    for start in range(0, len(emb), block):
        sims = emb[start : start + block] @ emb.T
        same = labels[start : start + block, None] == labels[None, :]
        positives[start : start + block] = np.argmin(np.where(same, sims, np.inf), axis=-1)
        negatives[start : start + block] = np.argmax(np.where(same, -np.inf, sims), axis=-1)
    return positives, negatives


def triplet_order(sample, positives, negatives):
    """Record indices ``[anchor, positive, negative, ...]`` of every anchor of ``sample`` (positions into it)."""
    sample = np.asarray(sample, np.int64)
    return np.stack([sample, sample[positives], sample[negatives]], axis=-1).reshape(-1)

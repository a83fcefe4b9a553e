"""Losses of keras_insightface, reachable by the seed's names as ``losses.<Name>``.

The names load lazily from their modules: ``margin`` (the margin-softmax family), ``triplet``, ``center``,
``distillation``, ``cross_entropy`` and ``seed_functions`` (the seed's plain functions). A seed name that is not
built here raises an ``AttributeError`` saying why and what to use instead.

Example:
    >>> from keras_insightface import losses
    >>> losses.ArcfaceLoss(scale=16).scale
    16.0
    >>> losses.BatchHardTripletLoss(0.25).kind
    'batch_hard_cosine'
"""

import importlib

_NAMES = {
    "margin": (
        "ArcfaceLoss", "ArcfaceLossSimple", "CosFaceLoss", "SphereFaceLoss", "CurricularFaceLoss", "AirFaceLoss",
        "MagFaceLoss", "AdaFaceLoss", "AdaCosLoss", "MarginSoftmax", "SoftmaxLoss",
    ),
    "triplet": (
        "TripletLoss", "BatchHardTripletLoss", "BatchAllTripletLoss", "BatchHardTripletLossEuclidean",
        "ArcBatchHardTripletLoss", "OfflineTripletLoss", "OfflineArcTripletLoss", "AcrTripLoss",
    ),
    "center": ("CenterLoss",),
    "distillation": ("DistillCosineLoss", "DistillEuclideanLoss", "DistillKLDivergence",
                     "DistillKLDivergenceLoss"),
    "cross_entropy": ("MarginCrossEntropy",),
    "seed_functions": ("scale_softmax", "distiller_loss_cosine"),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}
# Seed names left out on purpose, with the reason and what to use.
_NOT_BUILT = {
    "BatchHardTripletLossEuclideanAutoAlpha": "the seed's class fails when constructed (it names an undefined "
    "class); use BatchHardTripletLossEuclidean(alpha)",
    "CenterLossCosine": "the seed moves its centers toward the raw embeddings; CenterLoss(num_classes, cosine=True) "
    "has the same loss value with centers of normalised embeddings",
    "distiller_loss_euclidean": "the seed's distance of unnormalised embeddings is not built; use "
    "DistillEuclideanLoss() (normalised) or distiller_loss_cosine",
}


def __getattr__(name):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    if name in _NOT_BUILT:
        raise AttributeError(f"losses.{name} is not available: {_NOT_BUILT[name]}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_MODULE_OF))

"""Losses of keras_insightface, reachable by the seed's names as ``losses.<Name>``.

The names load lazily from their modules: ``margin`` (the margin-softmax family), ``triplet``, ``center``,
``distillation`` and ``cross_entropy``.

Example:
    >>> from keras_insightface import losses
    >>> losses.ArcfaceLoss(scale=16).scale
    16.0
"""

import importlib

_NAMES = {
    "margin": (
        "ArcfaceLoss", "ArcfaceLossSimple", "CosFaceLoss", "SphereFaceLoss", "CurricularFaceLoss", "AirFaceLoss",
        "MagFaceLoss", "AdaFaceLoss", "AdaCosLoss", "MarginSoftmax", "SoftmaxLoss",
    ),
    "triplet": ("TripletLoss", "OfflineArcTripletLoss", "AcrTripLoss"),
    "center": ("CenterLoss",),
    "distillation": ("DistillCosineLoss", "DistillEuclideanLoss", "DistillKLDivergence"),
    "cross_entropy": ("MarginCrossEntropy",),
}
_MODULE_OF = {name: module for module, names in _NAMES.items() for name in names}


def __getattr__(name):
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_MODULE_OF))

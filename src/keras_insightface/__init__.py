"""keras_insightface: train and evaluate face-recognition models with Keras 3 (JAX by default).

Importing the package selects the JAX backend unless ``KERAS_BACKEND`` is already set, so that
``import keras_insightface`` before ``import keras`` gives the fast path. Public names are loaded
lazily: reading a ``.rec`` file does not import Keras.

Example:
    >>> import keras_insightface as kif
    >>> basic = kif.buildin_models("r18_tiny", output_layer="GDC", emb_shape=128)
    >>> basic.output_shape
    (None, 128)
"""

import importlib
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

__version__ = "0.1.0"

_PUBLIC = {
    "buildin_models": "keras_insightface.models",
    "NormDense": "keras_insightface.heads.norm_dense",
    "MarginHead": "keras_insightface.heads.margin",
    "PartialFC": "keras_insightface.heads.partial_fc",
    "EuclideanDense": "keras_insightface.heads.euclidean_dense",
    "NormDenseVPL": "keras_insightface.heads.vpl",
    **{
        name: "keras_insightface.losses.margin"
        for name in (
            "ArcfaceLoss", "ArcfaceLossSimple", "CosFaceLoss", "SphereFaceLoss", "CurricularFaceLoss", "AirFaceLoss",
            "MagFaceLoss", "AdaFaceLoss", "AdaCosLoss", "MarginSoftmax",
        )
    },
    "CenterLoss": "keras_insightface.losses.center",
    "TripletLoss": "keras_insightface.losses.triplet",
    "AcrTripLoss": "keras_insightface.losses.triplet",
    "OfflineArcTripletLoss": "keras_insightface.losses.triplet",
    "OfflineTripletLoss": "keras_insightface.losses.triplet",
    "DistillCosineLoss": "keras_insightface.losses.distillation",
    "DistillEuclideanLoss": "keras_insightface.losses.distillation",
    "DistillKLDivergence": "keras_insightface.losses.distillation",
    "DistillKLDivergenceLoss": "keras_insightface.losses.distillation",
    "load_model": "keras_insightface.saving",
    "open_model": "keras_insightface.inference.embedders",
    "Train": "keras_insightface.training.train",
    "eval_callback": "keras_insightface.evaluation.verification",
    "evaluate_bin": "keras_insightface.evaluation.verification",
    "hist_plot_split": "keras_insightface.plot",
}


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'keras_insightface' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_PUBLIC))

"""keras_insightface: train and evaluate face-recognition models with Keras 3 (JAX by default).

Importing the package selects the JAX backend unless ``KERAS_BACKEND`` is already set, so that
``import keras_insightface`` before ``import keras`` gives the fast path, and turns on JAX's persistent
compilation cache in the user's cache folder (``_persistent_compilation_cache``). Public names are loaded
lazily: reading a ``.rec`` file does not import Keras.

Example:
    >>> import keras_insightface as kif
    >>> basic = kif.buildin_models("r18_tiny", output_layer="GDC", emb_shape=128)
    >>> basic.output_shape
    (None, 128)
"""

import importlib
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")


def _persistent_compilation_cache():
    """JAX's persistent compilation cache in the user's cache folder (``$XDG_CACHE_HOME`` or ``~/.cache``, then
    ``keras_insightface/jax``), unless the user set ``JAX_COMPILATION_CACHE_DIR`` or opted out with
    ``KERAS_INSIGHTFACE_COMPILATION_CACHE=0``: the second run of any command skips XLA compilation (opening an r50
    ``.keras``: 6.2 s without the cache, 5.2 s on a second run, ``bench/startup.py``)."""
    if os.environ.get("KERAS_INSIGHTFACE_COMPILATION_CACHE", "1") == "0" or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(base, "keras_insightface", "jax")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # the many small initialiser programs
    if "jax" in sys.modules:  # imported before us: its configuration already read the environment
        jax = sys.modules["jax"]
        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


_persistent_compilation_cache()

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

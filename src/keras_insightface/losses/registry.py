"""Every loss a training stage takes, by name: what a config file's ``loss = "..."`` (with ``loss_config``) names
and what a resolved config writes back.

Names are the classes' (margin losses, the seed's triplet losses, ``CenterLoss``, ``AcrTripLoss``, the
distillation losses) plus the seed's loss functions (``scale_softmax``, ``distiller_loss_cosine``) and the aliases
``softmax`` / ``categorical_crossentropy``; they are matched without regard to case.

Example:
    >>> get_stage_loss({"class_name": "batchhardtripletloss", "config": {"alpha": 0.3}}).alpha
    0.3
    >>> serialize_stage_loss(get_stage_loss("ArcfaceLoss"))["class_name"]
    'ArcfaceLoss'
"""

import difflib

from keras_insightface.losses.center import CenterLoss
from keras_insightface.losses.distillation import (
    DistillCosineLoss, DistillEuclideanLoss, DistillKLDivergence, DistillKLDivergenceLoss,
)
from keras_insightface.losses.margin import ALIASES, MARGIN_LOSSES, get_margin_loss
from keras_insightface.losses.seed_functions import distiller_loss_cosine, scale_softmax
from keras_insightface.losses.triplet import (
    AcrTripLoss, ArcBatchHardTripletLoss, BatchAllTripletLoss, BatchHardTripletLoss, BatchHardTripletLossEuclidean,
    OfflineArcTripletLoss, OfflineTripletLoss, TripletLoss,
)

OTHER_STAGE_LOSSES = {
    cls.__name__: cls
    for cls in (
        TripletLoss, BatchHardTripletLoss, BatchAllTripletLoss, BatchHardTripletLossEuclidean, ArcBatchHardTripletLoss,
        OfflineTripletLoss, OfflineArcTripletLoss, AcrTripLoss, CenterLoss, DistillCosineLoss, DistillEuclideanLoss, DistillKLDivergence,
        DistillKLDivergenceLoss,
    )
}
STAGE_FUNCTIONS = {function.__name__: function for function in (scale_softmax, distiller_loss_cosine)}


def stage_loss_names():
    """Every name ``get_stage_loss`` takes, in the registry's spelling."""
    return [*MARGIN_LOSSES, *ALIASES, *OTHER_STAGE_LOSSES, *STAGE_FUNCTIONS]


def _canonical(name):
    by_lower = {known.lower(): known for known in stage_loss_names()}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1)
    hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
    raise ValueError(f"Unknown stage loss {name!r}{hint}; available: {', '.join(stage_loss_names())}")


def get_stage_loss(spec):
    """A stage's loss from a name or a ``{"class_name", "config"}`` dict (objects pass through)."""
    if not isinstance(spec, (str, dict)):
        return spec
    name = spec if isinstance(spec, str) else spec.get("class_name")
    if not isinstance(name, str):
        raise ValueError(f"A stage loss needs a class name, received {spec!r}")
    name = _canonical(name)
    config = {} if isinstance(spec, str) else dict(spec.get("config") or {})
    if name in STAGE_FUNCTIONS:
        if config:
            raise ValueError(f"{name} is a loss function: it takes no loss_config, received {config}")
        return STAGE_FUNCTIONS[name]
    if name in OTHER_STAGE_LOSSES:
        try:
            return OTHER_STAGE_LOSSES[name](**config)
        except TypeError as error:
            raise ValueError(f"{name}: bad loss_config {config}: {error}") from None
    try:
        return get_margin_loss({"class_name": ALIASES.get(name, name), "config": config} if config else name)
    except TypeError as error:
        raise ValueError(f"{name}: bad loss_config {config}: {error}") from None


def serialize_stage_loss(loss):
    """``{"class_name", "config"}`` of a stage loss (a loss function: its name, no config), read back by
    ``get_stage_loss``."""
    if getattr(loss, "__name__", None) in STAGE_FUNCTIONS and STAGE_FUNCTIONS[loss.__name__] is loss:
        return {"class_name": loss.__name__, "config": {}}
    if type(loss).__name__ not in {**MARGIN_LOSSES, **OTHER_STAGE_LOSSES}:
        raise ValueError(f"{type(loss).__name__} is not a stage loss a config file can name; use one of "
                         f"{', '.join(stage_loss_names())}")
    return {"class_name": type(loss).__name__, "config": loss.get_config()}

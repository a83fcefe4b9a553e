"""What one stage dict asks for: its kind, its main loss, and the seed's other stage keys, checked up front.

Kinds (the seed's ``type``): ``arcface`` (a margin loss on the cosine head), ``softmax`` (a plain ``Dense``
classifier), and the classifier-free ``triplet`` (an in-batch triplet loss on the embeddings) and ``distill``
(match a teacher's embeddings). The kind follows from ``loss`` unless ``type`` names it.

Example:
    >>> from keras_insightface.losses.margin import ArcfaceLoss
    >>> plan = plan_stage(0, {"loss": ArcfaceLoss(scale=16), "epoch": 2, "lossTopK": 3, "lossWeight": 0.5})
    >>> plan.kind, plan.top_k, plan.loss_weight, plan.bottleneck_only
    ('arcface', 3, 0.5, False)
    >>> plan_stage(1, {"type": "triplet", "epoch": 1, "alpha": 0.3}).embedding_loss.alpha
    0.3
"""

import dataclasses

from keras_insightface.losses.distillation import DistillCosineLoss, EmbeddingDistill
from keras_insightface.losses.margin import get_margin_loss
from keras_insightface.losses.triplet import TripletLoss

STAGE_KEYS = (
    "epoch", "loss", "optimizer", "type", "lossWeight", "lossTopK", "bottleneckOnly", "centerloss", "triplet",
    "alpha", "tripletKind", "distill", "tripletAlpha", "embLossTypes", "embLossWeights",
)
# The seed's embLossTypes names, by the stage key of the same extra term.
EMB_LOSS_KEYS = ("centerloss", "triplet", "distill")
KINDS = ("arcface", "softmax", "triplet", "distill")
IN_BATCH_TRIPLETS = ("batch_hard_cosine", "batch_hard_euclidean", "batch_all", "arc_batch_hard")


@dataclasses.dataclass
class StagePlan:
    """A checked stage: ``margin_loss`` for classifier kinds, ``embedding_loss`` for triplet / distill ones."""

    kind: str
    epochs: int
    margin_loss: object = None
    embedding_loss: object = None
    loss_weight: float = 1.0
    top_k: int = 1
    bottleneck_only: bool = False


def triplet_loss(stage, index):
    """The stage's in-batch triplet loss from ``tripletKind`` and ``alpha`` (0.35)."""
    kind = stage.get("tripletKind", "batch_hard_cosine")
    if kind not in IN_BATCH_TRIPLETS:
        raise ValueError(f"Stage {index}: tripletKind {kind!r} is not an in-batch kind; use one of {IN_BATCH_TRIPLETS}"
                         " ('offline' needs batches of (anchor, positive, negative) triples)")
    return TripletLoss(kind, alpha=float(stage.get("alpha", 0.35)))


def _kind_of(loss):
    if isinstance(loss, TripletLoss):
        return "triplet"
    if isinstance(loss, EmbeddingDistill):
        return "distill"
    return "softmax" if get_margin_loss(loss).plain_head else "arcface"


def fill_losses(schedule, previous=None):
    """The stage dicts with the seed's rule applied: a stage without ``loss`` (and not a triplet / distill type)
    trains with the loss of the stage before it (``previous``: the last loss of an earlier ``train`` call)."""
    filled = []
    for stage in schedule:
        if isinstance(stage, dict) and stage.get("loss") is None and stage.get("type") not in ("triplet", "distill"):
            if previous is not None:
                stage = {**stage, "loss": previous}
        elif isinstance(stage, dict):
            previous = stage.get("loss", previous)
        filled.append(stage)
    return filled


def seed_stage_keys(index, stage):
    """The stage with the seed's ``train_single_scheduler`` spellings turned into the stage keys: ``tripletAlpha``
    is ``alpha``; ``embLossTypes`` (names containing ``centerloss`` / ``triplet`` / ``distill``) with
    ``embLossWeights`` (one weight, or one per type) are the ``centerloss`` / ``triplet`` / ``distill`` weights."""
    stage = dict(stage)
    if "tripletAlpha" in stage:
        stage.setdefault("alpha", stage.pop("tripletAlpha"))
    types, weights = stage.pop("embLossTypes", None), stage.pop("embLossWeights", 1)
    if types is None:
        return stage
    types = types if isinstance(types, (list, tuple)) else [types]
    for position, kind in enumerate(types):
        name = (kind if isinstance(kind, str) else getattr(kind, "__name__", type(kind).__name__)).lower()
        key = next((key for key in EMB_LOSS_KEYS if key in name), None)
        if key is None:
            raise ValueError(f"Stage {index}: embLossTypes entry {kind!r} is not one of {EMB_LOSS_KEYS}")
        stage[key] = float(weights[position] if isinstance(weights, (list, tuple)) else weights)
    return stage


def plan_stage(index, stage):
    """Check stage dict number ``index`` and say what it trains; errors name the stage and the bad key."""
    unknown = sorted(set(stage) - set(STAGE_KEYS))
    if unknown:
        raise ValueError(f"Stage {index}: unknown keys {unknown}; stage keys are {', '.join(STAGE_KEYS)}")
    stage = seed_stage_keys(index, stage)
    epochs = stage.get("epoch")
    if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs < 1 or int(epochs) != epochs:
        raise ValueError(f"Stage {index} needs a positive 'epoch' (whole epochs), received {stage!r}")
    kind = stage.get("type")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"Stage {index}: type {kind!r} is not one of {KINDS}")
    loss = stage.get("loss")
    if loss is None and kind not in ("triplet", "distill"):
        raise ValueError(f"Stage {index} needs a 'loss' such as ArcfaceLoss(scale=16) (a later stage without one "
                         f"reuses the loss before it), received {stage!r}")
    if loss is not None and kind is not None and _kind_of(loss) != kind:
        raise ValueError(f"Stage {index}: type {kind!r} does not fit the loss {loss!r} (a {_kind_of(loss)} loss)")
    kind = kind or _kind_of(loss)
    top_k = stage.get("lossTopK", 1)
    if not isinstance(top_k, int) or top_k < 1 or (top_k > 1 and kind != "arcface"):
        raise ValueError(f"Stage {index}: lossTopK must be a positive integer, > 1 only with a margin loss; "
                         f"received {top_k!r} for a {kind} stage")
    plan = StagePlan(kind, int(epochs), loss_weight=float(stage.get("lossWeight", 1.0)), top_k=top_k,
                     bottleneck_only=bool(stage.get("bottleneckOnly", False)))
    if kind in ("arcface", "softmax"):
        plan.margin_loss = get_margin_loss(loss)
    elif kind == "triplet":
        if "triplet" in stage:
            raise ValueError(f"Stage {index}: a triplet stage weighs its loss with 'lossWeight', not 'triplet'")
        plan.embedding_loss = loss if loss is not None else triplet_loss(stage, index)
    else:
        plan.embedding_loss = loss if loss is not None else DistillCosineLoss()
    return plan

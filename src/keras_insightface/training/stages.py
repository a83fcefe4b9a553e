"""What one stage dict asks for: its kind, its main loss, and the seed's other stage keys, checked up front.

Kinds (the seed's ``type``): ``arcface`` (a margin loss on the cosine head), ``softmax`` (a plain ``Dense``
classifier), and the classifier-free ``triplet`` (an in-batch triplet loss on the embeddings), ``center`` (the
center loss alone on the embeddings) and ``distill`` (match a teacher's embeddings). The kind follows from
``loss`` unless ``type`` names it.

The seed's loss spellings are read with the seed's meaning (``stage_loss``):

- ``keras.losses.CategoricalCrossentropy(label_smoothing=ls)``, ``keras.losses.categorical_crossentropy``,
  ``"categorical_crossentropy"`` and ``losses.scale_softmax`` -> ``SoftmaxLoss`` (label smoothing carried);
- ``losses.BatchHardTripletLoss(alpha)``, ``BatchAllTripletLoss``, ... -> a triplet stage (their ``TripletLoss``);
- ``losses.CenterLoss(num_classes, emb_shape)`` -> a center stage trained by that layer;
- ``losses.AcrTripLoss(margin, scale)`` -> an arcface stage: the run's cosine classifier, the target logit
  lowered by the in-batch triplet violation (``AcrTripTerm``);
- ``losses.distiller_loss_cosine`` -> a distill stage with ``DistillCosineLoss``;
- ``losses.DistillKLDivergenceLoss(scale)`` (``DistillKLDivergence``) -> an arcface stage without margin: the run's
  cosine classifier trained toward the class scores of a teacher whose output is the classes.

Example:
    >>> from keras_insightface.losses.margin import ArcfaceLoss
    >>> plan = plan_stage(0, {"loss": ArcfaceLoss(scale=16), "epoch": 2, "lossTopK": 3, "lossWeight": 0.5})
    >>> plan.kind, plan.top_k, plan.loss_weight, plan.bottleneck_only
    ('arcface', 3, 0.5, False)
    >>> plan_stage(1, {"type": "triplet", "epoch": 1, "alpha": 0.3}).embedding_loss.alpha
    0.3
    >>> import keras
    >>> plan = plan_stage(2, {"loss": keras.losses.CategoricalCrossentropy(label_smoothing=0.1), "epoch": 1})
    >>> plan.kind, plan.margin_loss
    ('softmax', SoftmaxLoss(from_logits=False, label_smoothing=0.1))
"""

import dataclasses

import keras

from keras_insightface.losses.center import CenterLoss
from keras_insightface.losses.distillation import DistillCosineLoss, DistillKLDivergence, EmbeddingDistill
from keras_insightface.losses.margin import MarginLoss, SoftmaxLoss, get_margin_loss
from keras_insightface.losses.seed_functions import distiller_loss_cosine, scale_softmax
from keras_insightface.losses.triplet import AcrTripLoss, TripletLoss

STAGE_KEYS = (
    "epoch", "loss", "optimizer", "type", "lossWeight", "lossTopK", "bottleneckOnly", "centerloss", "triplet",
    "alpha", "tripletKind", "distill", "tripletAlpha", "embLossTypes", "embLossWeights",
)
# The seed's embLossTypes names, by the stage key of the same extra term.
EMB_LOSS_KEYS = ("centerloss", "triplet", "distill")
KINDS = ("arcface", "softmax", "triplet", "center", "distill")
# kinds whose stage may leave out 'loss' (a default loss) instead of reusing the loss of the stage before
LOSS_OPTIONAL_KINDS = ("triplet", "center", "distill")
IN_BATCH_TRIPLETS = (
    "batch_hard_cosine", "batch_hard_euclidean", "batch_all", "arc_batch_hard", "batch_hard_squared",
    "batch_hard_arc_margin",
)


@dataclasses.dataclass
class StagePlan:
    """A checked stage: ``margin_loss`` for classifier kinds, ``embedding_loss`` for the others: the
    ``TripletLoss``, the ``CenterLoss`` layer (None: the run's), the distillation loss, or an arcface stage's
    ``AcrTripLoss`` or ``DistillKLDivergence`` (then ``margin_loss`` is None)."""

    kind: str
    epochs: int
    margin_loss: object = None
    embedding_loss: object = None
    loss_weight: float = 1.0
    top_k: int = 1
    bottleneck_only: bool = False
    triplet_term: bool = False

    @property
    def main_term(self):
        """The ``FaceTask`` term of the stage's main loss: crossentropy, embedding, centerloss or distill."""
        if self.margin_loss is not None:
            return "crossentropy"
        if self.logit_distill:
            return "distill"
        return {"triplet": "embedding", "arcface": "embedding", "center": "centerloss", "distill": "distill"}[self.kind]

    @property
    def logit_distill(self):
        """Whether the stage trains the cosine classifier toward a teacher's class scores (``DistillKLDivergence``,
        the seed's arcface-type ``DistillKLDivergenceLoss`` stage)."""
        return isinstance(self.embedding_loss, DistillKLDivergence)

    @property
    def grouped(self):
        """Whether the main loss mines the batch (triplet, AcrTripLoss): its batches should be identity groups."""
        return self.main_term == "embedding"

    @property
    def identity_groups(self):
        """Whether the stage's batches should be identity groups: its main loss or its ``triplet`` term mines them."""
        return self.grouped or self.triplet_term


def triplet_loss(stage, index):
    """The stage's in-batch triplet loss from ``tripletKind`` and ``alpha`` (0.35)."""
    kind = stage.get("tripletKind", "batch_hard_cosine")
    if kind not in IN_BATCH_TRIPLETS:
        raise ValueError(f"Stage {index}: tripletKind {kind!r} is not an in-batch kind; use one of {IN_BATCH_TRIPLETS}"
                         " ('offline' needs batches of (anchor, positive, negative) triples)")
    return TripletLoss(kind, alpha=float(stage.get("alpha", 0.35)))


def stage_loss(index, loss):
    """The loss object a stage trains with, from the stage's ``loss`` in this project's or the seed's spelling
    (see the module docstring); errors name the stage."""
    if loss is None or isinstance(loss, (MarginLoss, EmbeddingDistill, CenterLoss, AcrTripLoss, DistillKLDivergence)):
        return loss
    if isinstance(loss, TripletLoss):  # offline kinds are checked against the run (StageParts.stage_terms)
        return loss
    if isinstance(loss, keras.losses.CategoricalCrossentropy):
        config = loss.get_config()
        return SoftmaxLoss(label_smoothing=config["label_smoothing"], from_logits=config["from_logits"])
    if loss is scale_softmax or loss is keras.losses.categorical_crossentropy:
        return SoftmaxLoss()
    if loss is distiller_loss_cosine:
        return DistillCosineLoss()
    if callable(loss) and not isinstance(loss, keras.losses.Loss):
        raise ValueError(f"Stage {index}: the loss function {getattr(loss, '__name__', loss)!r} is not one a "
                         "stage knows; use losses.scale_softmax, keras.losses.categorical_crossentropy, "
                         "losses.distiller_loss_cosine or a loss object (ArcfaceLoss(), BatchHardTripletLoss(), ...)")
    try:
        return get_margin_loss(loss)
    except ValueError as error:
        raise ValueError(f"Stage {index}: {error}; or a triplet, center, AcrTrip, distillation loss, or "
                         "keras.losses.CategoricalCrossentropy") from None


def _kind_of(loss):
    """The stage kind of a loss from ``stage_loss``."""
    if isinstance(loss, TripletLoss):
        return "triplet"
    if isinstance(loss, EmbeddingDistill):
        return "distill"
    if isinstance(loss, CenterLoss):
        return "center"
    if isinstance(loss, (AcrTripLoss, DistillKLDivergence)):
        return "arcface"
    return "softmax" if loss.plain_head else "arcface"


def prepare_schedule(schedule, previous=None):
    """The stage dicts as ``plan_stage`` and the trainer read them: the seed's spellings turned into stage keys
    (``seed_stage_keys``) and its rule applied that a stage without ``loss`` (and not a triplet / center / distill
    type) trains with the loss of the stage before it (``previous``: the last loss of an earlier ``train`` call)."""
    filled = []
    for index, stage in enumerate(schedule):
        stage = seed_stage_keys(index, stage) if isinstance(stage, dict) else stage
        if isinstance(stage, dict) and stage.get("loss") is None and stage.get("type") not in LOSS_OPTIONAL_KINDS:
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
    epochs = stage.get("epoch")
    if not isinstance(epochs, (int, float)) or isinstance(epochs, bool) or epochs < 1 or int(epochs) != epochs:
        raise ValueError(f"Stage {index} needs a positive 'epoch' (whole epochs), received {stage!r}")
    kind = stage.get("type")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"Stage {index}: type {kind!r} is not one of {KINDS}")
    loss = stage_loss(index, stage.get("loss"))
    if loss is None and kind not in LOSS_OPTIONAL_KINDS:
        raise ValueError(f"Stage {index} needs a 'loss' such as ArcfaceLoss(scale=16) (a later stage without one "
                         f"reuses the loss before it), received {stage!r}")
    if loss is not None and kind is not None and _kind_of(loss) != kind:
        raise ValueError(f"Stage {index}: type {kind!r} does not fit the loss {loss!r} (a {_kind_of(loss)} loss)")
    kind = kind or _kind_of(loss)
    top_k = stage.get("lossTopK", 1)
    if not isinstance(top_k, int) or top_k < 1 or (top_k > 1 and (kind != "arcface" or isinstance(loss, AcrTripLoss))):
        raise ValueError(f"Stage {index}: lossTopK must be a positive integer, > 1 only with a margin loss; "
                         f"received {top_k!r} for a {kind} stage")
    plan = StagePlan(kind, int(epochs), loss_weight=float(stage.get("lossWeight", 1.0)), top_k=top_k,
                     bottleneck_only=bool(stage.get("bottleneckOnly", False)), triplet_term=bool(stage.get("triplet")))
    if kind in ("arcface", "softmax") and not isinstance(loss, (AcrTripLoss, DistillKLDivergence)):
        plan.margin_loss = loss
    elif kind == "triplet":
        plan.embedding_loss = loss if loss is not None else triplet_loss(stage, index)
    elif kind == "distill":
        plan.embedding_loss = loss if loss is not None else DistillCosineLoss()
    else:  # center (None: the run's CenterLoss), AcrTripLoss or DistillKLDivergence
        plan.embedding_loss = loss
    for key, term in (("triplet", "embedding"), ("centerloss", "centerloss")):
        if key in stage and plan.main_term == term:
            raise ValueError(f"Stage {index}: the stage's own loss is the {term} term; weigh it with 'lossWeight', "
                             f"not {key!r}")
    return plan

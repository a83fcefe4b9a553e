"""``FaceTask``: the Keras model a stage trains, fed ``(images, labels)``; its ``compute_loss`` holds the stage's
whole loss in one place.

``call`` runs what depends on the images only: on-device augmentation (and mixup), the basic model, and the
teacher of an in-step distillation. ``compute_loss`` takes the labels and the embeddings and adds up the stage's
terms, each weighted as the stage dict says:

- ``crossentropy`` (margin stages): classifier (``NormDense`` / ``PartialFC`` / a plain ``Dense``) -> margin
  (``MarginHead``) -> sparse softmax cross-entropy against the labels the classifier used (Partial FC renumbers
  them into its sample), plus the margin's own extra term (MagFace); with mixup, weighted between both labels;
- ``centerloss``: ``CenterLoss`` on the embeddings (its centers move inside the step);
- ``embedding``: an in-batch triplet loss on the embeddings;
- ``distill``: the distance between the teacher's embeddings and the (projected) student's, or with
  ``DistillKLDivergence`` between the teacher's class scores and the classifier's cosines.

Each term is the batch mean of its per-sample values times its weight, summed in the order of the names, as
Keras's compiled losses would. The metrics: ``loss``, the classifier's top-1 ``accuracy`` and, when a stage
has several terms, each term's unweighted ``<term>_loss``.

Example:
    >>> import numpy as np, keras
    >>> from keras_insightface.heads.norm_dense import NormDense
    >>> from keras_insightface.heads.margin import MarginHead
    >>> from keras_insightface.losses.margin import ArcfaceLoss
    >>> from keras_insightface.data.augment import FaceAugment
    >>> basic = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 128, -1),
    ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(16)], name="tiny")
    >>> task = FaceTask(basic, FaceAugment(random_status=0), head=NormDense(4),
    ...                 margin_head=MarginHead(ArcfaceLoss(scale=16)))
    >>> task.compile(optimizer="sgd")
    >>> images, labels = np.zeros((8, 32, 32, 3), "uint8"), np.arange(8) % 4
    >>> sorted(task.fit(images, labels, batch_size=8, epochs=1, verbose=0).history)
    ['accuracy', 'loss']
"""

import keras
from keras import ops

from keras_insightface.heads.partial_fc import PartialFC
from keras_insightface.heads.vpl import NormDenseVPL
from keras_insightface.losses.cross_entropy import MarginCrossEntropy
from keras_insightface.losses.distillation import DistillKLDivergence
from keras_insightface.losses.triplet import AcrTripTerm
from keras_insightface.training.sam import check_rho, sam_train_step

def batch_mean(values):
    """The mean of per-sample ``values`` as Keras reduces a loss (sum over batch size), in float32."""
    values = ops.cast(values, "float32")
    return ops.divide_no_nan(ops.sum(values), ops.cast(ops.size(values), "float32"))


class FaceTask(keras.Model):
    """A stage's training model: ``images`` (uint8 NHWC) or ``(images, teacher embeddings)`` -> outputs; trained
    with ``fit(images, labels)``.

    Args:
        basic_model: the embedding model (normalises inside), trained in place.
        augment: a layer ``uint8 images -> float32 0..255`` that augments when training (``FaceAugment``).
        head: the classifier: ``NormDense`` (cosines; with the ``-||x||`` column when the margin reads norms),
            ``NormDenseVPL`` (the same, centers mixed with remembered features, fed the labels),
            ``PartialFC`` (cosines of a class sample and the labels in it) or a ``Dense`` (plain softmax).
        margin_head: a ``MarginHead`` turning the classifier's cosines into logits (None: no classifier).
        weights: term name -> weight (``crossentropy``, ``centerloss``, ``embedding``, ``distill``).
        embedding_loss: the ``embedding`` term's Keras loss ``(labels, embeddings)`` (a ``TripletLoss``).
        center_loss: a ``CenterLoss`` layer for the ``centerloss`` term.
        distill: ``(teacher, distance, projection)``: ``teacher`` a frozen embedding model (a full model whose
            output is the classes, for ``DistillKLDivergence``) run on the augmented images, or the size D of
            stored teacher embeddings given as the second input; ``distance`` a distillation loss whose
            ``call(teacher, student)`` is per sample; ``projection`` maps the student embedding to the teacher's
            size (or None).
        mixup: a ``Mixup`` layer mixing the augmented images; the cross-entropy is then weighted between both
            labels (margins without running statistics only).
        sam_rho: > 0 trains with Sharpness-Aware Minimization of that radius (``sam.py``, the seed's ``SAMModel``).
    """

    def __init__(self, basic_model, augment, head=None, margin_head=None, weights=None, embedding_loss=None,
                 center_loss=None, distill=None, mixup=None, sam_rho=0.0, **kwargs):
        kwargs.setdefault("name", basic_model.name + "_train")
        super().__init__(**kwargs)
        self.basic_model, self.augment, self.head, self.margin_head = basic_model, augment, head, margin_head
        self.weights_by_term = dict(weights or {"crossentropy": 1.0})
        self.embedding_loss, self.center_loss, self.mixup = embedding_loss, center_loss, mixup
        self.sam_rho = check_rho(sam_rho)
        self.teacher, self.distance, self.projection = distill if distill is not None else (None, None, None)
        self.stored_teacher = isinstance(self.teacher, int)
        if self.stored_teacher:
            self.teacher_dim, self.teacher = self.teacher, None
        label_smoothing = margin_head.loss.label_smoothing if margin_head is not None else 0.0
        self.cross_entropy = MarginCrossEntropy(label_smoothing)
        self.acr_trip = isinstance(embedding_loss, AcrTripTerm)  # the loss scores the classifier's cosines itself
        has_classifier = margin_head is not None or self.acr_trip
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy") if has_classifier else None
        present = {"centerloss": center_loss, "crossentropy": margin_head, "distill": self.distance,
                   "embedding": embedding_loss}
        terms = sorted(name for name, part in present.items() if part is not None)
        several = len(terms) > 1  # one term is the loss itself
        self.term_trackers = {name: keras.metrics.Mean(name=f"{name}_loss") for name in terms if several}
        self._build_heads(basic_model.output_shape)

    def _build_heads(self, embedding_shape):
        """Create the variables of the layers that only ``compute_loss`` calls (``fit`` builds what ``call`` uses)."""
        dims = embedding_shape[-1]
        if self.head is not None and not self.head.built:
            self.head.build(embedding_shape if not isinstance(self.head, PartialFC) else [embedding_shape, (None,)])
        if self.margin_head is not None and not self.margin_head.built:
            classes = getattr(self.head, "units", None)
            self.margin_head.build([(None, classes), (None,)])
        if self.center_loss is not None and not self.center_loss.built:
            self.center_loss.build([embedding_shape, (None,)])
        if self.projection is not None and not self.projection.built:
            self.projection.build((None, dims))

    def call(self, inputs, training=None):
        images, teacher = (inputs[0], inputs[1]) if isinstance(inputs, (list, tuple)) else (inputs, None)
        augmented = self.augment(images, training=training)
        outputs = {}
        if self.mixup is not None:
            augmented, outputs["mix_weight"], outputs["partner"] = self.mixup(augmented, training=training)
        outputs["embedding"] = self.basic_model(augmented, training=training)
        if self.distance is not None:
            outputs["teacher"] = teacher if self.stored_teacher else self.teacher(augmented, training=False)
        return outputs

    def _cosines(self, embedding, labels, training):
        """``(classifier scores, the labels they are scored against)``: Partial FC renumbers the labels into its
        class sample; VPL mixes remembered features into the centers and remembers the batch's."""
        if isinstance(self.head, PartialFC):
            return self.head([embedding, labels])
        if isinstance(self.head, NormDenseVPL):
            return self.head([embedding, labels], training=training), labels
        return self.head(embedding), labels

    def _classifier_terms(self, embedding, labels, outputs, training):
        """``(cross-entropy per sample, margin extra per sample or None)``; updates the accuracy."""
        cos, head_labels = self._cosines(embedding, labels, training)
        logits, extra = self.margin_head.logits_and_extra(cos, head_labels, training=training)
        cross_entropy = self.cross_entropy.call(head_labels, logits)
        if self.mixup is not None:
            weight = outputs["mix_weight"]
            partner_labels = ops.take(head_labels, ops.cast(outputs["partner"], "int32"), axis=0)
            partner_logits, _ = self.margin_head.logits_and_extra(cos, partner_labels, training=training)
            partner = self.cross_entropy.call(partner_labels, partner_logits)
            cross_entropy = weight * cross_entropy + (1.0 - weight) * partner
        self._track_accuracy(cos[:, :-1] if getattr(self.head, "append_norm", False) else cos, head_labels)
        return cross_entropy, extra

    def _track_accuracy(self, scores, labels):
        """Top-1 accuracy of the classifier's scores against the labels they were scored with."""
        predicted = ops.argmax(scores, axis=-1)
        correct = ops.equal(predicted, ops.cast(ops.reshape(labels, (-1,)), predicted.dtype))
        self.accuracy_tracker.update_state(ops.cast(correct, "float32"))

    def train_step(self, state, data):
        """Keras's step, or with ``sam_rho`` > 0 the SAM step (the gradient taken at sharpness-perturbed weights)."""
        if self.sam_rho > 0:
            return sam_train_step(self, state, data, self.sam_rho)
        return super().train_step(state, data)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The stage's whole loss from the labels ``y`` and the outputs of ``call``; see the module docstring."""
        labels, embedding = y, y_pred["embedding"]
        terms, extra = {}, None
        if self.margin_head is not None:
            terms["crossentropy"], extra = self._classifier_terms(embedding, labels, y_pred, training)
        if self.center_loss is not None:
            terms["centerloss"] = self.center_loss([embedding, labels], training=training)
        if self.acr_trip:  # AcrTripLoss on the run's classifier's cosines, whose accuracy is logged too
            terms["embedding"], cos = self.embedding_loss(labels, embedding)
            self._track_accuracy(cos, labels)
        elif self.embedding_loss is not None:
            terms["embedding"] = self.embedding_loss(labels, embedding)
        if self.distance is not None:
            if isinstance(self.distance, DistillKLDivergence):  # class scores: the classifier's cosines
                student = self._cosines(embedding, labels, training)[0]
            else:
                student = self.projection(embedding) if self.projection is not None else embedding
            terms["distill"] = self.distance.call(y_pred["teacher"], student)
        means = {name: batch_mean(terms[name]) for name in sorted(terms)}
        for name, tracker in self.term_trackers.items():
            tracker.update_state(means[name])
        total = sum(value * self.weights_by_term[name] for name, value in means.items())
        additional = [batch_mean(extra)] if extra is not None else []
        additional += [ops.sum(ops.cast(loss, "float32")) for loss in self.losses]  # regularizers, add_loss
        return ops.sum(ops.stack([total, *additional])) if additional else total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """The accuracy was updated in ``compute_loss`` (where the classifier's cosines are); report everything."""
        return self.get_metrics_result()

"""``StageParts``: the parts of a run's model that carry from stage to stage, and each stage's ``FaceTask`` and
optimizer made from them.

Carried across stages: the cosine classifier's kernel (re-shaped when a stage asks for sub-centers or the norm
column), a plain ``Dense`` classifier for softmax stages, the margin's running statistics (same kind of margin),
the center-loss centers, the distillation projection, and the optimizer with its momentum and schedule position
(unless a stage names another optimizer or trains other variables).
"""

import keras

from keras_insightface.heads.euclidean_dense import EuclideanDense
from keras_insightface.heads.margin import MarginHead
from keras_insightface.heads.norm_dense import NormDense
from keras_insightface.heads.partial_fc import PartialFC
from keras_insightface.heads.vpl import NormDenseVPL
from keras_insightface.losses.center import CenterLoss
from keras_insightface.losses.distillation import DistillCosineLoss, projection_for
from keras_insightface.losses.triplet import OFFLINE_KINDS, AcrTripLoss, AcrTripTerm, TripletLoss
from keras_insightface.training.distribute import host_values, no_distribution
from keras_insightface.training.optimizers import named_optimizer, with_schedule
from keras_insightface.training.schedules import run_schedule
from keras_insightface.training.stages import triplet_loss
from keras_insightface.training.task import FaceTask


class StageParts:
    """The model parts of a run and the per-stage training model built from them.

    Args:
        basic_model: the embedding model being trained.
        head: the run's classifier: ``NormDense``, ``NormDenseVPL`` (the seed's ``vpl_start_iters``) or
            ``PartialFC``.
        augment: the on-device augmentation layer.
        num_classes: identities of the dataset.
        image_per_class: > 1 when batches hold identity groups (needed by triplet terms).
        teacher: a frozen in-step teacher model, or None.
        teacher_dim: the size of stored teacher embeddings (distill-data), or None.
        mixup: a ``Mixup`` layer, or None.
        schedule_settings: keywords of ``schedules.run_schedule`` but the epochs (``kind``, ``lr_base``,
            ``lr_min``, ``lr_decay``, ``lr_decay_steps``, ``warmup_epochs``, ``steps_per_epoch``).
        optimizer_settings: keywords of ``named_optimizer`` (``momentum``, ``weight_decay``, ``lr_base``,
            ``decay_factors``).
        default_optimizer: the optimizer of stages that name none (a name, or a Keras optimizer to copy).
        steps_per_execution: train steps per compiled call.
        sam_rho: > 0: every stage trains with Sharpness-Aware Minimization of that radius (``sam.py``).
        mixed_precision: the run's dtype policy name; ``mixed_float16`` wraps optimizers in loss scaling.
        dense_head: a plain ``Dense`` / ``EuclideanDense`` classifier continued from a full model (softmax
            stages), or None.
        softmax_classifier: the classifier softmax stages make: ``"dense"`` (no bias) or ``"euclidean"``.
        mining: whether batches are offline-mined triples (``samples_per_mining``): offline triplet losses need it.
    """

    def __init__(self, basic_model, head, augment, num_classes, image_per_class=0, teacher=None, teacher_dim=None,
                 mixup=None, schedule_settings=None, optimizer_settings=None, mixed_precision="float32", dense_head=None,
                 default_optimizer="adam", steps_per_execution=1, sam_rho=0.0, softmax_classifier="dense",
                 mining=False):
        self.basic_model, self.head, self.augment, self.num_classes = basic_model, head, augment, num_classes
        self.image_per_class, self.teacher, self.teacher_dim, self.mixup = image_per_class, teacher, teacher_dim, mixup
        self.schedule_settings, self.optimizer_settings = dict(schedule_settings or {}), dict(optimizer_settings or {})
        self.mixed_precision, self.dense_head = mixed_precision, dense_head
        self.center_loss = self.margin_head = self.distill_projection = None
        self.optimizer = self.train_model = None
        self.optimizer_start_epoch = 0  # the epoch the optimizer (its schedule's step 0) was created at
        self._signature, self._optimizer_spec = None, default_optimizer
        self.steps_per_execution, self.sam_rho = steps_per_execution, sam_rho
        self.softmax_classifier, self.mining = softmax_classifier, mining
        self.lr_scheduler = None  # a seed scheduler object (lr_schedulers.py) replacing the configured schedule
        self.stage_classifier = None  # the classifier of the stage being trained (None: a stage without one)
        self._full_model = None  # (key, model, classifier copy) written by full_model

    def stage_head(self, margin_loss, top_k=1):
        """The classifier for a stage: the same kernel, with the norm column when the loss reads norms and
        ``top_k`` sub-centers per class (weights kept when the kernel shape stays); a ``Dense`` classifier
        (kept across its stages) for plain softmax."""
        if isinstance(self.head, PartialFC):
            if margin_loss.needs_norm or margin_loss.plain_head or top_k > 1:
                raise ValueError(f"{type(margin_loss).__name__} (lossTopK {top_k}) is not available with PartialFC")
            return self.head
        if margin_loss.plain_head:
            if self.dense_head is None and self.softmax_classifier == "euclidean":
                self.dense_head = EuclideanDense(self.num_classes, name="euclidean_dense")
            elif self.dense_head is None:  # the seed's softmax classifier: no bias
                self.dense_head = keras.layers.Dense(self.num_classes, use_bias=False, dtype="float32",
                                                     name="dense_softmax")
            return self.dense_head
        return self.cosine_head(margin_loss.needs_norm, top_k)

    def cosine_head(self, needs_norm=False, top_k=1):
        """The run's cosine classifier (``NormDense`` / ``NormDenseVPL``) with the norm column when ``needs_norm``
        and ``top_k`` sub-centers: the same layer when it fits, else a new one with its weights when shapes allow."""
        if self.head.append_norm == needs_norm and self.head.loss_top_k == top_k:
            return self.head
        if isinstance(self.head, NormDenseVPL):
            if top_k > 1:
                raise ValueError(f"lossTopK {top_k} (sub-centers) is not available with VPL (vpl_start_iters)")
            head = NormDenseVPL(self.num_classes, self.head.vpl_lambda, self.head.start_iters, self.head.allowed_delta,
                                append_norm=needs_norm, name="norm_dense_vpl")
        else:
            head = NormDense(self.num_classes, loss_top_k=top_k, append_norm=needs_norm, name="norm_dense")
        head.build(self.basic_model.output_shape)
        if self.head.built and self.head.kernel.shape == head.kernel.shape:
            for new, old in zip(head.weights, self.head.weights):  # device to device, also when split across hosts
                new.assign(old.value)
        return head

    def full_model(self):
        """The seed's full model: the basic model followed by the classifier the run trains (the stage's, else the
        run's cosine classifier; a Partial FC or VPL kernel as a ``NormDense``), with their current weights. Every
        host calls it: the kernel may be gathered across hosts."""
        classifier = self.stage_classifier if self.stage_classifier is not None else self.head
        if not getattr(classifier, "built", False):
            return self.basic_model
        kernel_only = isinstance(classifier, (PartialFC, NormDenseVPL))  # saved as the NormDense they train
        values = host_values([classifier.kernel] if kernel_only else classifier.weights)
        with no_distribution():  # the copy's kernel whole on every host (a sharded one cannot be saved by one)
            return self._full_model_with(classifier, kernel_only, values)

    def _full_model_with(self, classifier, kernel_only, values):
        key = (type(classifier), classifier.get_config().get("append_norm"), values[0].shape, len(values))
        if self._full_model is None or self._full_model[0] != key:
            if kernel_only:
                copy = NormDense(self.num_classes, name="norm_dense")
            else:
                copy = type(classifier).from_config(classifier.get_config())
            model = keras.Model(self.basic_model.inputs[0], copy(self.basic_model.outputs[0]),
                                name=self.basic_model.name + "_full")
            self._full_model = key, model, copy
        _, model, copy = self._full_model
        copy.set_weights(values)
        return model

    def carry_margin_state(self, margin_head):
        """A stage with the same kind of margin loss continues its running statistics (t, norm mean/std, scale)."""
        previous, self.margin_head = self.margin_head, margin_head
        if previous is not None and type(previous.loss) is type(margin_head.loss):
            for name, variable in margin_head.state_variables.items():
                variable.assign(previous.state_variables[name])

    def stage_terms(self, index, stage, plan):
        """``(weights, embedding_loss)`` of a stage: its main term (weight ``lossWeight``) plus the weighted extra
        terms it asks for; distillation is on (weight ``distill``, default 1) whenever the run has a teacher."""
        weights = {plan.main_term: plan.loss_weight}
        embedding_loss = plan.embedding_loss if plan.main_term == "embedding" else None
        if plan.kind == "center":
            self.center_loss = self.stage_center_loss(index, plan.embedding_loss)
        if stage.get("centerloss"):
            if self.center_loss is None:
                self.center_loss = CenterLoss(self.num_classes, name="center_loss")
            weights["centerloss"] = float(stage["centerloss"])
        if stage.get("triplet"):
            embedding_loss, weights["embedding"] = triplet_loss(stage, index), float(stage["triplet"])
        offline = isinstance(embedding_loss, TripletLoss) and embedding_loss.kind in OFFLINE_KINDS
        if offline and not self.mining:
            raise ValueError(f"Stage {index}: {type(embedding_loss).__name__} reads batches of offline-mined "
                             "[anchor, positive, negative] triples: set samples_per_mining > 0 (the seed's), or use "
                             "an in-batch triplet loss such as BatchHardTripletLoss with image_per_class >= 2")
        if isinstance(embedding_loss, TripletLoss) and not offline and not self.mining and self.image_per_class < 2:
            raise ValueError(f"Stage {index}: triplet losses need batches of identity groups: set image_per_class "
                             ">= 2 (e.g. 4) so every sample has positives in its batch")
        has_teacher = self.teacher_dim is not None or self.teacher is not None
        if plan.logit_distill:
            teacher_width = None if self.teacher is None else int(self.teacher.output_shape[-1])
            if teacher_width != self.num_classes:
                raise ValueError(f"Stage {index}: {type(plan.embedding_loss).__name__} matches a teacher's class "
                                 f"scores: give Train(teacher_model_interf=<a full model with {self.num_classes} "
                                 f"outputs>), received a teacher with {teacher_width} outputs")
            return weights, embedding_loss
        if self.teacher_scores_classes:  # a full-model teacher: only DistillKLDivergence stages use it
            if stage.get("distill") or plan.kind == "distill":
                raise ValueError(f"Stage {index}: the teacher outputs class scores ({self.num_classes}), not "
                                 "embeddings: distil it with a DistillKLDivergence stage, or give a basic model")
            return weights, embedding_loss
        if (plan.kind == "distill" or "distill" in stage) and not has_teacher:
            raise ValueError(f"Stage {index}: distillation needs teacher embeddings: a data_path npz from "
                             "keras-insightface distill-data, or Train(teacher_model_interf=...)")
        if has_teacher and plan.kind != "distill" and float(stage.get("distill", 1.0)):
            weights["distill"] = float(stage.get("distill", 1.0))
        return weights, embedding_loss

    @property
    def teacher_scores_classes(self):
        """Whether the in-step teacher is a full model ending in a classifier of the run's classes (the seed's
        KL-distillation teacher) rather than an embedding model."""
        if self.teacher is None or int(self.teacher.output_shape[-1]) != self.num_classes:
            return False
        return getattr(self.teacher.layers[-1], "kernel", None) is not None and \
            self.teacher.layers[-1].name != "embedding"

    def stage_center_loss(self, index, loss):
        """A center stage's ``CenterLoss``: the stage's own layer, checked against the run, or the run's (None)."""
        if loss is None:
            return self.center_loss or CenterLoss(self.num_classes, name="center_loss")
        width = int(self.basic_model.output_shape[-1])
        if loss.num_classes != self.num_classes or loss.emb_shape not in (None, width):
            raise ValueError(f"Stage {index}: CenterLoss(num_classes={loss.num_classes}, emb_shape={loss.emb_shape}) "
                             f"does not fit the run: {self.num_classes} identities, embeddings of width {width}")
        return loss

    def acr_trip_term(self, index, loss):
        """An ``AcrTripLoss`` stage's term: the run's cosine classifier (its kernel carried on) in ``AcrTripTerm``."""
        if isinstance(self.head, (PartialFC, NormDenseVPL)):
            raise ValueError(f"Stage {index}: AcrTripLoss needs the plain NormDense classifier, not "
                             f"{type(self.head).__name__}")
        self.head = self.stage_head(loss.arcface)
        if not self.head.built:
            self.head.build(self.basic_model.output_shape)
        return AcrTripTerm(self.head, loss, name="acr_trip")

    def distill_parts(self, plan, weights):
        """``FaceTask``'s ``distill`` argument for a stage that distils, else None."""
        if "distill" not in weights:
            return None
        if plan.logit_distill:  # the classifier's cosines against the teacher's class scores
            return self.teacher, plan.embedding_loss, None
        teacher_dim = self.teacher_dim if self.teacher is None else int(self.teacher.output_shape[-1])
        if self.distill_projection is None:  # kept across stages, trained with the student
            self.distill_projection = projection_for(int(self.basic_model.output_shape[-1]), teacher_dim)
        distance = plan.embedding_loss if plan.kind == "distill" else DistillCosineLoss()
        return (self.teacher if self.teacher is not None else teacher_dim), distance, self.distill_projection

    def compile_stage(self, index, stage, plan, epoch, total_epochs):
        """Build and compile the stage's ``FaceTask`` at run epoch ``epoch`` of ``total_epochs``; the optimizer
        follows from its trainable variables."""
        head = margin_head = None
        self.stage_classifier = None
        if plan.margin_loss is not None:
            head = self.stage_head(plan.margin_loss, plan.top_k)
            if not plan.margin_loss.plain_head:
                self.head = head  # the cosine classifier's kernel carries over to later margin stages
            margin_head = MarginHead(plan.margin_loss, name="margin")
            self.stage_classifier = head
        elif plan.logit_distill:
            if isinstance(self.head, PartialFC):
                raise ValueError(f"Stage {index}: {type(plan.embedding_loss).__name__} needs the full cosine "
                                 "classifier, not PartialFC")
            self.head = self.stage_classifier = head = self.cosine_head()
        weights, embedding_loss = self.stage_terms(index, stage, plan)
        if isinstance(embedding_loss, AcrTripLoss):
            embedding_loss = self.acr_trip_term(index, embedding_loss)
        mixup = self.mixup if margin_head is not None else None
        if mixup is not None and (plan.margin_loss.initial_state() or plan.margin_loss.needs_norm):
            raise ValueError(f"Stage {index}: mixup_alpha needs a margin loss without running statistics or norms, "
                             f"received {plan.margin_loss}")
        self.train_model = FaceTask(
            self.basic_model, self.augment, head=head, margin_head=margin_head, weights=weights,
            embedding_loss=embedding_loss, center_loss=self.center_loss if "centerloss" in weights else None,
            distill=self.distill_parts(plan, weights), mixup=mixup, sam_rho=self.sam_rho,
        )
        if margin_head is not None:
            self.carry_margin_state(margin_head)
        signature = [(v.path, tuple(v.shape)) for v in self.train_model.trainable_variables]
        self.optimizer = self.stage_optimizer(stage, signature, epoch, total_epochs)
        self.train_model.compile(optimizer=self.optimizer, jit_compile=True,
                                 steps_per_execution=self.steps_per_execution)
        return self.train_model

    def stage_optimizer(self, stage, signature, epoch, total_epochs):
        """The stage's optimizer; the previous one (momentum, schedule position) carries over unless the stage
        names another or trains other variables (``signature``: the trainable variables' paths and shapes, e.g.
        plain softmax <-> cosine head, sub-centers, a frozen backbone): then the run's optimizer starts afresh
        at the current schedule position: a named one (``"sgdw"``, ...) by its name, a user's optimizer object from
        its config. As the seed's schedulers set the rate of whatever optimizer a stage brings, a user's optimizer
        object trains with the run's schedule, not its own learning rate."""
        optimizer = stage.get("optimizer")
        same_variables = signature == self._signature
        self._signature = signature
        if optimizer is None and self.optimizer is not None and same_variables:
            return self.optimizer
        if optimizer is None:
            optimizer = self._optimizer_spec
        else:
            self._optimizer_spec = optimizer
        schedule = self.schedule_at(epoch, total_epochs)
        if isinstance(optimizer, str):
            optimizer = named_optimizer(optimizer.lower(), schedule, **self.optimizer_settings)
        else:
            optimizer = with_schedule(optimizer, schedule)
        is_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        if self.mixed_precision == "mixed_float16" and not is_scaled:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)  # fp16 gradients underflow without it
        return optimizer

    def schedule_at(self, epoch, total_epochs):
        """The schedule of an optimizer created at ``epoch``: its step 0 is that epoch of the run's one curve."""
        self.optimizer_start_epoch = epoch
        if self.lr_scheduler is not None:
            return self.lr_scheduler.schedule(self.schedule_settings["steps_per_epoch"], start_epoch=epoch)
        return run_schedule(**self.schedule_settings, start_epoch=epoch, total_epochs=total_epochs)

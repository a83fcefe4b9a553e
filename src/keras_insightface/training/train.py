"""``Train``: the seed system's training driver — a dataset, a basic model, and a list of stage dicts.

Example:
    >>> from keras_insightface import Train, ArcfaceLoss
    >>> tt = Train("datasets/faces_emore", save_path="r50_arcface.keras", eval_paths=["datasets/lfw.bin"],
    ...            basic_model="r50", batch_size=512, lr_base=0.1, lr_warmup_steps=1)   # doctest: +SKIP
    >>> tt.train([{"loss": ArcfaceLoss(scale=16), "epoch": 5},
    ...           {"loss": ArcfaceLoss(scale=32), "epoch": 5},
    ...           {"loss": ArcfaceLoss(scale=64), "epoch": 40}])                          # doctest: +SKIP

Stages run back to back; epochs accumulate, the classifier (``NormDense``) and the optimizer carry over,
and the learning rate follows one warmup + cosine curve over all stages.
"""

import atexit
import contextlib
import functools
import os
import weakref

import keras
import numpy as np

from keras_insightface.data.augment import FaceAugment, Mixup
from keras_insightface.data.loader import describe_record, make_loader
from keras_insightface.data.sources import open_source
from keras_insightface.errors import DataError
from keras_insightface.evaluation.verification import eval_callback
from keras_insightface.heads.margin import MarginHead
from keras_insightface.heads.norm_dense import NormDense
from keras_insightface.heads.partial_fc import PartialFC
from keras_insightface.losses.center import CenterLoss
from keras_insightface.losses.distillation import DistillCosineLoss, projection_for
from keras_insightface.losses.margin import get_margin_loss
from keras_insightface.models import buildin_models
from keras_insightface.saving import copy_weights_by_name, load_model, split_full_model
from keras_insightface.training import callbacks as cbs
from keras_insightface.training.checkpoint import latest_state_dir, load_meta, restore_model_and_optimizer
from keras_insightface.training.distribute import (
    data_parallel_size, host_values, is_primary, process_count, resolve_distribution,
)
from keras_insightface.training.optimizers import L2SGD, SGDW, AdamW, Lookahead
from keras_insightface.training.outputs import (
    MixupCrossEntropy, OutputMean, PerSampleCrossEntropy, PerSampleDistance, PerSampleLoss, TopOneCorrect,
)
from keras_insightface.training.schedules import (
    CosineRestarts, ExponentialDecay, PolynomialDecay, StepDecay, WarmupCosine,
)
from keras_insightface.training.stages import plan_stage, triplet_loss

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


@contextlib.contextmanager
def dtype_policy(policy):
    """Layers made inside use ``policy`` (e.g. ``mixed_bfloat16``); the global policy is put back after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_train_model(basic_model, head, margin_head, augment, center_loss=None, distill=None, mixup=None):
    """``(uint8 images, int labels) -> {"embedding", "logits", "crossentropy", "top1"}`` (+ ``"centerloss"``,
    ``"distill"``).

    ``head`` is ``NormDense`` (with the ``-||x||`` column when the loss reads norms) or ``PartialFC``, which
    also renumbers the labels into its sample; margin, cross-entropy and accuracy use the head's labels.
    ``margin_head=None`` builds a classifier-free model (triplet / distill stages). ``distill`` is
    ``(teacher, distance, projection)``: ``teacher`` a frozen model run on the same augmented images, or the
    size D of teacher embeddings that come as a third input ``(B, D)``; ``distance`` a ``PerSampleDistance``;
    ``projection`` maps the student embedding to the teacher's size (or ``None``). ``mixup`` (a ``Mixup``
    layer) mixes the augmented images and the cross-entropy becomes ``MixupCrossEntropy``.
    """
    images = keras.Input(basic_model.input_shape[1:], dtype="uint8", name="images")
    labels = keras.Input((), dtype="int32", name="labels")
    inputs = [images, labels]
    augmented = augment(images)
    if mixup is not None:
        augmented, mix_weight, partner = mixup(augmented)
    embedding = basic_model(augmented)
    outputs = {"embedding": embedding}
    if margin_head is not None:
        if isinstance(head, PartialFC):
            cos, head_labels = head([embedding, labels])
        else:
            cos, head_labels = head(embedding), labels
        logits = margin_head([cos, head_labels])
        norm_column = getattr(head, "append_norm", False)
        outputs["top1"] = TopOneCorrect(drop_last_column=norm_column, name="top1")([cos, head_labels])
        smoothing = margin_head.loss.label_smoothing
        if mixup is not None:
            outputs["crossentropy"] = MixupCrossEntropy(margin_head, smoothing, name="crossentropy")(
                [cos, head_labels, logits, mix_weight, partner])
        else:
            outputs["crossentropy"] = PerSampleCrossEntropy(smoothing, name="crossentropy")([logits, head_labels])
        outputs["logits"] = logits
    if center_loss is not None:
        outputs["centerloss"] = center_loss([embedding, labels])
    if distill is not None:
        teacher, distance, projection = distill
        if isinstance(teacher, int):
            target = keras.Input((teacher,), name="teacher_embedding")
            inputs.append(target)
        else:
            target = teacher(augmented)
        outputs["distill"] = distance([target, projection(embedding) if projection is not None else embedding])
    return keras.Model(inputs, outputs, name=basic_model.name + "_train")


def _close_at_exit(trainer_ref):
    """Stop a live trainer's decode workers before interpreter teardown, when nobody called ``close()``."""
    trainer = trainer_ref()
    if trainer is not None:
        trainer.close()


class _TrainBatches:
    """The loader's batches as ``((images, labels), targets)`` for ``fit``, remembering the loader state after each
    batch fetched, so a checkpoint stores exactly the position of the batches trained on (Keras may read ahead)."""

    KEEP = 16

    def __init__(self, iterator, skipped_images, output_names, embeddings=None, with_embeddings=False):
        self.iterator, self.skipped_images, self.output_names = iterator, skipped_images, output_names
        self.embeddings, self.with_embeddings = embeddings, with_embeddings
        self.fetched, self.states = 0, {}

    def __iter__(self):
        for images, labels, skipped, *records in self.iterator:
            self.fetched += 1
            if hasattr(self.iterator, "get_state"):
                self.states[self.fetched] = self.iterator.get_state()
                self.states.pop(self.fetched - self.KEEP, None)
            self.skipped_images.record(skipped)
            inputs = (images, labels, self.embeddings[records[0]]) if self.with_embeddings else (images, labels)
            yield inputs, {name: labels for name in self.output_names}

    def state_after(self, batches):
        return self.states[batches]

    def rewind(self, batches):
        """Put the loader back to just after ``batches`` fetched (undo a read-ahead at the end of a ``fit``)."""
        if self.fetched != batches and batches in self.states:
            self.iterator.set_state(self.states[batches])
            self.fetched = batches


class Train:
    """Train a face-recognition model with a schedule of stages.

    Args:
        data_path: ``.rec`` folder/file, class-folder root, or ``path<TAB>label`` list file.
        save_path: file name of the run, e.g. ``r50_arcface.keras``; outputs go to ``checkpoint_dir``
            unless it holds a directory: ``<name>_hist.json``, ``<name>_basic_<set>_epoch_<E>_<acc>.keras``.
        eval_paths: ``.bin`` verification packs evaluated every ``eval_freq`` epochs (and every
            ``eval_every_steps`` batches when set, printed); the first one decides which basic model is kept as
            best. The latest basic model of each stage is kept as ``<name>_basic_stage_<k>_latest.keras``.
        basic_model: a ``buildin_models`` name (built with ``emb_shape``/``output_layer``), a keras.Model,
            or a model file to fine-tune (``.keras``, or a seed ``.h5`` translated by ``seed_h5``).
        model: a full model (keras.Model or ``.keras``/``.h5`` file, e.g. the seed's saved training model): its
            basic model (up to the layer named ``embedding``) replaces ``basic_model`` and its classifier kernel
            starts the head when it fits the dataset's classes (sub-centers included).
        pretrained: a ``.keras``/``.h5`` model whose weights are copied into the basic model layer by layer, by
            name and shape (another head or embedding size keeps those layers as built).
        output_weight_decay: weight decay of the classifier kernel: 0 none, >= 1 that many times
            ``weight_decay`` (default 1: the same), in (0, 1) that value (the seed's convention).
        batch_size, lr_base, lr_min: as the seed; the learning rate is set per batch.
        lr_decay_steps: 0 = one cosine from ``lr_base`` to ``lr_min`` over all stages; N > 0 = the seed's
            cosine with restarts: first cycle N epochs, each next twice as long with its peak times
            ``lr_decay``, one epoch at ``lr_min`` before each restart; a list of epochs = step decay, times
            ``lr_decay`` at each (the seed's constant scheduler).
        lr_schedule: None (from ``lr_decay_steps`` as above), or ``"cosine"``, ``"cosine_restarts"``,
            ``"step"``, ``"exponential"`` (times ``lr_decay`` every epoch), ``"polynomial"`` (arcface_torch's
            power 2 to ``lr_min`` at the last epoch); all after ``lr_warmup_steps`` and floored at ``lr_min``.
        lr_warmup_steps: warmup epochs (linear from 0).
        weight_decay: coupled L2 of the default SGD (momentum 0.9), 5e-4 as insightface.
        mixed_precision: ``float32``, ``mixed_bfloat16`` or ``mixed_float16``.
        random_status: the seed's augmentation level on the accelerator (0 flip, 1 + brightness, 2 + contrast
            and saturation, 3 + crop; >= 100 RandAugment with magnitude 5 * random_status / 100), see FaceAugment.
        random_cutout_mask_area: probability of the seed's face-mask cutout (lower face filled).
        augment: a ``FaceAugment`` (or any layer uint8 images -> float32 0..255) used instead of the one
            built from ``random_status`` / ``random_cutout_mask_area``: RandAugment op sets, AutoAugment
            policies, hue, cutout.
        jpeg_quality_level: L > 0 re-compresses images in the loader workers at JPEG quality 80 +- 5L.
        mixup_alpha: > 0 mixes pairs of augmented images inside the step (the seed's mixup: a Beta(alpha, alpha)
            weight per sample) with the cross-entropy weighted between both labels; margin losses without
            running statistics only (ArcFace, CosFace, ...).
        image_per_class: > 1 keeps identities with at least that many images and batches whole identity
            groups of that size (for triplet-style losses).
        strict_data: stop at the first unreadable image instead of replacing it and reporting the count.
        partial_fc_sample_rate: < 1 scores only that fraction of the classes per step (``PartialFC``); the
            sample must hold a batch's classes, so it needs ``sample_rate * classes >= batch_size``.
        teacher_model_interf: a teacher embedding model (or ``.keras``/``.h5`` path) run, frozen, on the same
            augmented images inside the step; its embeddings are distilled into the student (stage key
            ``distill``). A ``data_path`` npz written by ``keras-insightface distill-data`` gives stored teacher
            embeddings instead (also ONNX / TorchScript teachers).
        tensorboard_dir: write Keras's TensorBoard logs (epoch losses, accuracy, eval results) there; needs
            TensorFlow and TensorBoard (the ``compat`` extra).
        checkpoint_every_steps: a full-state checkpoint (``<name>_state/``) every N batches, besides the one
            at every epoch end; ``train(schedule, resume=True)`` continues from the latest, mid-epoch included,
            also on another number of devices when the global batch stays the same.
        distribution: ``"auto"`` = all local devices (``DataParallel``; one device: no distribution), ``None``
            = the default device only, or a ``keras.distribution.Distribution``. ``batch_size`` is per
            data-parallel device, as in the seed: the global batch is ``batch_size`` times the size of the batch
            mesh axis, and each host's loader reads its share. Several hosts: call
            ``distribute.initialize_hosts`` first; ``"auto"`` then spans every device of every host, and process 0
            writes the files (see the README's "Several devices and hosts").
        model_parallel: > 1 shards the classifier kernel on its class axis over groups of that many devices
            (``class_sharded_distribution``), for identity counts whose kernel does not fit one device.

    Stage dicts: ``loss`` (a margin loss, e.g. ``ArcfaceLoss(scale=16)``, or ``"softmax"`` for a plain ``Dense``
    classifier), ``epoch``, optional ``optimizer`` (a Keras optimizer, or ``"sgd"`` = L2SGD with ``weight_decay``
    as coupled L2, ``"sgdw"`` / ``"adamw"`` with a decoupled decay of ``weight_decay * lr`` per step,
    ``"lookahead_sgd"`` etc. for ``Lookahead`` around one),
    ``centerloss`` (weight of the center loss, centers kept across stages), ``triplet`` (weight of an in-batch
    triplet loss) with its margin ``alpha`` (0.35) and ``tripletKind`` (``batch_hard_cosine`` default,
    ``batch_hard_euclidean``, ``batch_all``, ``arc_batch_hard``); with ``image_per_class`` > 1 every batch
    holds whole identity groups, so each sample has positives.
    """

    def __init__(
        self,
        data_path,
        save_path,
        eval_paths=(),
        basic_model="r50",
        model=None,
        pretrained=None,
        output_weight_decay=1,
        batch_size=128,
        lr_base=0.1,
        lr_decay=0.05,
        lr_decay_steps=0,
        lr_min=1e-5,
        lr_schedule=None,
        lr_warmup_steps=0,
        eval_freq=1,
        eval_every_steps=0,
        weight_decay=5e-4,
        momentum=0.9,
        mixed_precision="float32",
        emb_shape=512,
        output_layer="GDC",
        checkpoint_dir="checkpoints",
        num_workers=None,
        random_status=0,
        random_cutout_mask_area=0.0,
        augment=None,
        jpeg_quality_level=0,
        image_per_class=0,
        mixup_alpha=0,
        strict_data=False,
        partial_fc_sample_rate=1.0,
        teacher_model_interf=None,
        checkpoint_every_steps=0,
        tensorboard_dir=None,
        distribution="auto",
        model_parallel=1,
        seed=0,
        verbose=1,
    ):
        if not 0 <= lr_min <= lr_base:
            raise ValueError(f"learning rates need 0 <= lr_min <= lr_base, received lr_min={lr_min}, lr_base={lr_base}")
        if mixed_precision not in PRECISIONS:
            raise ValueError(f"mixed_precision must be one of {PRECISIONS}, received {mixed_precision!r}")
        missing = [p for p in eval_paths if not os.path.isfile(p)]
        if missing:
            raise DataError(f"{missing[0]}: eval .bin file does not exist")
        self.distribution = resolve_distribution(distribution, model_parallel)
        self.global_batch_size = batch_size * data_parallel_size(self.distribution)
        host_batch = self._host_batch_size()
        self.source = open_source(data_path, image_per_class=image_per_class, strict=strict_data)
        # teacher embeddings (an npz from distill-data) stay in this process; batches say which records they hold
        self.teacher_embeddings = getattr(self.source, "embeddings", None)
        if self.teacher_embeddings is not None:
            self.source.embeddings = None
        self.image_per_class = image_per_class
        self.loader = make_loader(
            self.source, host_batch, seed=seed, num_workers=num_workers, image_per_class=image_per_class,
            strict=strict_data, jpeg_quality_level=jpeg_quality_level,
            with_records=self.teacher_embeddings is not None,
        )
        self.skipped_images = cbs.SkippedImages(functools.partial(describe_record, self.source))
        self.num_classes = self.loader.num_classes
        self.batch_size, self.lr_base, self.lr_min, self.lr_decay = batch_size, lr_base, lr_min, lr_decay
        self.lr_decay_steps, self.lr_warmup_steps, self.eval_freq = lr_decay_steps, lr_warmup_steps, eval_freq
        self.lr_schedule = self._schedule_kind(lr_schedule, lr_decay_steps)
        self.weight_decay, self.momentum = weight_decay, momentum
        self.verbose = verbose if is_primary() else 0  # one progress bar and report for all hosts
        self.mixed_precision = mixed_precision

        directory, filename = os.path.split(save_path)
        self.save_dir = directory or checkpoint_dir
        os.makedirs(self.save_dir, exist_ok=True)
        self.name = os.path.splitext(filename)[0]
        self.prefix = os.path.join(self.save_dir, self.name)
        self.history_path = self.prefix + "_hist.json"
        self.state_dir = self.prefix + "_state"
        self.checkpoint_every_steps = int(checkpoint_every_steps)

        keras.utils.set_random_seed(seed)  # weight init and augmentation draws repeat for a given seed
        self.decay_factors = self._output_decay_factors(output_weight_decay)
        with dtype_policy(mixed_precision), self.scope():
            classifier = None
            if model is not None:  # a full model (basic model + classifier): continue from both
                full = load_model(model) if isinstance(model, str) else model
                basic_model, classifier = split_full_model(full, model if isinstance(model, str) else "model")
            self.basic_model = self._load_basic_model(basic_model, output_layer, emb_shape)
            if pretrained is not None:
                copied, skipped = copy_weights_by_name(load_model(pretrained), self.basic_model, pretrained)
                print(f">>>> Pretrained {pretrained}: {len(copied)} layers loaded, {len(skipped)} kept as built"
                      + (f" ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" if skipped else ""))
            if partial_fc_sample_rate < 1:
                self.head = PartialFC(self.num_classes, partial_fc_sample_rate, seed=seed, name="partial_fc")
            else:
                self.head = NormDense(self.num_classes, name="norm_dense")
            self._reuse_classifier(classifier)
            self.augment = augment if augment is not None else FaceAugment(
                random_status=random_status, random_cutout_mask_area=random_cutout_mask_area, seed=seed, name="augment"
            )
            self.teacher = self._load_teacher(teacher_model_interf)
            self.mixup = Mixup(mixup_alpha, seed=seed, name="mixup") if mixup_alpha > 0 else None

        # evaluation batches are split over every device of every host, like the training batches (KerasEmbedder)
        self.eval_callbacks = [
            eval_callback(self.basic_model, p, self.global_batch_size, eval_freq=eval_freq, eval_every_steps=eval_every_steps,
                          verbose=is_primary())
            for p in eval_paths
        ]
        self.tensorboard_dir = tensorboard_dir
        if tensorboard_dir is not None:
            try:
                import tensorboard  # noqa: F401
                import tensorflow  # noqa: F401 - Keras's TensorBoard callback writes through tf.summary
            except ImportError:
                raise ImportError("tensorboard_dir needs TensorFlow and TensorBoard for writing summaries: "
                                  "pip install keras_insightface[compat]") from None
        self.history = {}
        self.initial_epoch = 0
        self.optimizer = None
        self._optimizer_start_epoch = 0
        self._classifier_kind = None
        self.train_model = None
        self.center_loss = None
        self.dense_head = None
        self.margin_head = None
        self.distill_projection = None
        self._iterator = None
        self._signature = None
        self._optimizer_spec = "sgd"

    def _load_basic_model(self, basic_model, output_layer, emb_shape):
        """The embedding model from a name, a model file, or a model (remade in the scope under a distribution:
        variables made outside it have no layout)."""
        if isinstance(basic_model, str) and basic_model.endswith((".keras", ".h5")):
            return load_model(basic_model)
        if isinstance(basic_model, str):
            return buildin_models(basic_model, output_layer=output_layer, emb_shape=emb_shape)
        if self.distribution is not None:
            weights, basic_model = basic_model.get_weights(), keras.models.clone_model(basic_model)
            basic_model.set_weights(weights)
        return basic_model

    @staticmethod
    def _schedule_kind(lr_schedule, lr_decay_steps):
        """The schedule name: given, or as the seed reads ``lr_decay_steps`` (a list: step decay at those epochs,
        N > 0: cosine with restarts, 0: one cosine)."""
        if lr_schedule is None:
            if isinstance(lr_decay_steps, (list, tuple)):
                return "step"
            return "cosine_restarts" if lr_decay_steps > 0 else "cosine"
        kinds = ("cosine", "cosine_restarts", "exponential", "step", "polynomial")
        if lr_schedule not in kinds:
            raise ValueError(f"lr_schedule must be one of {kinds}, received {lr_schedule!r}")
        is_list = isinstance(lr_decay_steps, (list, tuple))
        if (lr_schedule == "step") != is_list or (lr_schedule == "cosine_restarts" and not lr_decay_steps > 0):
            raise ValueError(f"lr_schedule {lr_schedule!r} needs lr_decay_steps as "
                             f"{'a list of epochs' if lr_schedule == 'step' else 'a number of epochs > 0'}, received "
                             f"{lr_decay_steps!r}")
        return lr_schedule

    def _output_decay_factors(self, output_weight_decay):
        """The seed's ``output_weight_decay`` as optimizer ``decay_factors`` for the classifier kernels: 0 = no
        decay, >= 1 = that many times ``weight_decay``, in (0, 1) = that decay value itself."""
        if output_weight_decay < 0:
            raise ValueError(f"output_weight_decay must be >= 0, received {output_weight_decay}")
        if 0 < output_weight_decay < 1:
            if not self.weight_decay:
                raise ValueError("output_weight_decay in (0, 1) is a decay value relative to weight_decay, which is 0")
            factor = output_weight_decay / self.weight_decay
        else:
            factor = float(output_weight_decay)
        return {} if factor == 1 else {"norm_dense_w": factor, "dense_softmax/kernel": factor}

    def _reuse_classifier(self, classifier):
        """Start the head from a full model's classifier kernel when it fits (NormDense, sub-centers included, or
        a plain Dense for softmax stages)."""
        if classifier is None:
            return
        kernel = host_values([classifier.kernel])[0]  # gathered when the kernel is split across hosts
        dims, classes = int(self.basic_model.output_shape[-1]), self.num_classes
        if isinstance(classifier, NormDense) and kernel.shape[0] == dims and kernel.shape[1] % classes == 0:
            if kernel.shape[1] != classes:
                self.head = NormDense(classes, loss_top_k=kernel.shape[1] // classes, name="norm_dense")
            self.head.build((None, dims))
            self.head.kernel.assign(kernel)
        elif type(classifier) is keras.layers.Dense and kernel.shape == (dims, classes):
            self.dense_head = keras.layers.Dense(classes, dtype="float32", name="dense_softmax")
            self.dense_head.build((None, dims))
            self.dense_head.set_weights(host_values(classifier.weights))
        else:
            print(f">>>> The model's classifier {classifier.name} {kernel.shape} does not fit {classes} classes of "
                  f"{dims}-d embeddings: a new one is trained")
            return
        print(f">>>> Continuing from the model's classifier {classifier.name} {kernel.shape}")

    def _load_teacher(self, teacher):
        """A frozen teacher embedding model run inside the training step, from a model or a ``.keras``/``.h5``."""
        if teacher is None:
            return None
        if self.teacher_embeddings is not None:
            raise ValueError("the dataset already holds teacher embeddings (distill-data); drop teacher_model_interf")
        if isinstance(teacher, str) and not teacher.endswith((".keras", ".h5")):
            raise DataError(f"{teacher}: an in-step teacher must be a .keras/.h5 model; for ONNX or TorchScript "
                            "teachers store their embeddings first with keras-insightface distill-data")
        teacher = self._load_basic_model(teacher, None, None)
        teacher.trainable = False
        return keras.Model(teacher.inputs[0], teacher.outputs[0], name="teacher")  # its own name, beside the student

    def _teacher_dim(self):
        if self.teacher is not None:
            return int(self.teacher.output_shape[-1])
        return None if self.teacher_embeddings is None else int(self.teacher_embeddings.shape[-1])

    def scope(self):
        """The context every model variable of the run is made and trained in: the distribution's scope."""
        return self.distribution.scope() if self.distribution is not None else contextlib.nullcontext()

    def _host_batch_size(self):
        """This host's share of the global batch (the loader's batch size)."""
        return self.global_batch_size // process_count()

    def _stage_head(self, margin_loss, top_k=1):
        """The classifier for a stage: the same kernel, with the norm column when the loss reads norms and
        ``top_k`` sub-centers per class (weights kept when the kernel shape stays); a ``Dense`` classifier
        (kept across its stages) for plain softmax."""
        if isinstance(self.head, PartialFC):
            if margin_loss.needs_norm or margin_loss.plain_head or top_k > 1:
                raise ValueError(f"{type(margin_loss).__name__} (lossTopK {top_k}) is not available with PartialFC")
            return self.head
        if margin_loss.plain_head:
            if self.dense_head is None:
                self.dense_head = keras.layers.Dense(self.num_classes, dtype="float32", name="dense_softmax")
            return self.dense_head
        if self.head.append_norm == margin_loss.needs_norm and self.head.loss_top_k == top_k:
            return self.head
        head = NormDense(self.num_classes, loss_top_k=top_k, append_norm=margin_loss.needs_norm, name="norm_dense")
        head.build(self.basic_model.output_shape)
        if self.head.built and self.head.kernel.shape == head.kernel.shape:
            for new, old in zip(head.weights, self.head.weights):  # device to device, also when split across hosts
                new.assign(old.value)
        return head

    def _carry_margin_state(self, margin_head):
        """A stage with the same kind of margin loss continues its running statistics (t, norm mean/std, scale)."""
        previous, self.margin_head = self.margin_head, margin_head
        if previous is not None and type(previous.loss) is type(margin_head.loss):
            for name, variable in margin_head.state_variables.items():
                variable.assign(previous.state_variables[name])

    def _stage_losses(self, index, stage, plan):
        """Compile arguments of a stage: its main loss (weight ``lossWeight``) plus the weighted extra losses
        it asks for; distillation is on (weight ``distill``, default 1) whenever the run has a teacher."""
        main = {"arcface": "crossentropy", "softmax": "crossentropy", "triplet": "embedding", "distill": "distill"}
        main = main[plan.kind]
        losses = {main: plan.embedding_loss if plan.kind == "triplet" else PerSampleLoss()}
        weights = {main: plan.loss_weight}
        if stage.get("centerloss"):
            if self.center_loss is None:
                self.center_loss = CenterLoss(self.num_classes, name="center_loss")
            losses["centerloss"], weights["centerloss"] = PerSampleLoss(), float(stage["centerloss"])
        if stage.get("triplet"):
            losses["embedding"], weights["embedding"] = triplet_loss(stage, index), float(stage["triplet"])
        if "embedding" in losses and self.image_per_class < 2:
            raise ValueError(f"Stage {index}: triplet losses need batches of identity groups: set image_per_class "
                             ">= 2 (e.g. 4) so every sample has positives in its batch")
        has_teacher = self._teacher_dim() is not None
        if (plan.kind == "distill" or "distill" in stage) and not has_teacher:
            raise ValueError(f"Stage {index}: distillation needs teacher embeddings: a data_path npz from "
                             "keras-insightface distill-data, or Train(teacher_model_interf=...)")
        if has_teacher and plan.kind != "distill" and float(stage.get("distill", 1.0)):
            losses["distill"], weights["distill"] = PerSampleLoss(), float(stage.get("distill", 1.0))
        return losses, weights

    def _distill_parts(self, plan, losses):
        """``build_train_model``'s ``distill`` argument for a stage that distils, else None."""
        if "distill" not in losses:
            return None
        teacher_dim = self._teacher_dim()
        if self.distill_projection is None:  # kept across stages, trained with the student
            self.distill_projection = projection_for(int(self.basic_model.output_shape[-1]), teacher_dim)
        distance = plan.embedding_loss if plan.kind == "distill" else DistillCosineLoss()
        teacher = self.teacher if self.teacher is not None else teacher_dim
        return teacher, PerSampleDistance(distance, name="distill"), self.distill_projection

    def _lr_schedule(self, total_epochs):
        """The schedule of an optimizer created now: its step 0 is the current epoch (``_optimizer_start_epoch``)."""
        steps = self.loader.steps_per_epoch
        self._optimizer_start_epoch = self.initial_epoch
        warmup = self.lr_warmup_steps * steps
        common = dict(lr_min=self.lr_min, warmup_steps=warmup, step_offset=self.initial_epoch * steps)
        kind, decay_steps = self.lr_schedule, self.lr_decay_steps
        if kind == "step":
            return StepDecay(self.lr_base, [epoch * steps for epoch in decay_steps], self.lr_decay, **common)
        if kind == "exponential":
            return ExponentialDecay(self.lr_base, steps, self.lr_decay, staircase=True, **common)
        if kind == "polynomial":
            return PolynomialDecay(self.lr_base, max(total_epochs * steps, warmup + 1), **common)
        if kind == "cosine_restarts":
            return CosineRestarts(self.lr_base, decay_steps * steps, cooldown_steps=steps, m_mul=self.lr_decay, **common)
        return WarmupCosine(self.lr_base, total_steps=max(total_epochs * steps, warmup, 1), **common)

    def _stage_optimizer(self, stage, total_epochs, signature):
        """The stage's optimizer; the previous one (momentum, schedule position) carries over unless the stage
        names another or trains other variables (``signature``: the trainable variables' paths and shapes, e.g.
        plain softmax <-> cosine head, sub-centers, a frozen backbone): then the default optimizer starts afresh
        at the current schedule position: a named one (``"sgdw"``, ...) by its name, a user's optimizer object from
        its config."""
        optimizer = stage.get("optimizer")
        same_variables = signature == self._signature
        self._signature = signature
        if optimizer is None and self.optimizer is not None and same_variables:
            return self.optimizer
        if optimizer is None and self.optimizer is not None:
            if isinstance(self._optimizer_spec, str):
                optimizer = self._optimizer_spec
            else:
                inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
                optimizer = type(inner).from_config(inner.get_config())
        else:
            self._optimizer_spec = optimizer if optimizer is not None else "sgd"
        schedule = self._lr_schedule(total_epochs)
        if optimizer is None or isinstance(optimizer, str):
            optimizer = self._named_optimizer((optimizer or "sgd").lower(), schedule)
        is_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        if self.mixed_precision == "mixed_float16" and not is_scaled:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)  # fp16 gradients underflow without it
        return optimizer

    def _named_optimizer(self, name, schedule):
        """``sgd`` (L2SGD, coupled ``weight_decay``), ``sgdw`` / ``adamw`` (decoupled decay of ``weight_decay * lr``
        per step, as PyTorch's), ``lookahead_<name>`` (``Lookahead`` around it), or a Keras optimizer name."""
        if name.startswith("lookahead_"):
            return Lookahead(self._named_optimizer(name[len("lookahead_"):], schedule))
        if name == "sgd":
            return L2SGD(schedule, momentum=self.momentum, l2=self.weight_decay, decay_factors=self.decay_factors)
        if name in ("sgdw", "adamw"):
            decay = dict(weight_decay=self.weight_decay * self.lr_base, lr_base=self.lr_base,
                         decay_factors=self.decay_factors)
            return SGDW(schedule, momentum=self.momentum, **decay) if name == "sgdw" else AdamW(schedule, **decay)
        try:
            return keras.optimizers.get({"class_name": name, "config": {"learning_rate": schedule}})
        except ValueError:
            raise ValueError(f"Unknown optimizer {name!r}: use sgd, sgdw, adamw, lookahead_<one of them>, or a "
                             "Keras optimizer name such as adam") from None

    def _current_lr(self):
        lr = self.optimizer.learning_rate
        return float(np.asarray(lr))

    def train(self, train_schedule, initial_epoch=None, resume=False, callbacks=()):
        """Run each stage dict (``loss``, ``epoch``, optional ``optimizer``) in turn; returns the history dict.

        ``resume=True`` continues the same schedule from the latest full-state checkpoint in ``<name>_state/``:
        the same batches, augmentation draws and updates as if the run had not stopped. ``callbacks`` are extra
        Keras callbacks, called after the built-in ones.
        """
        if isinstance(train_schedule, dict):
            train_schedule = [train_schedule]
        plans = [plan_stage(index, stage) for index, stage in enumerate(train_schedule)]
        meta, resume_dir = self._resume_point(train_schedule) if resume else (None, None)
        if meta is not None:
            initial_epoch = meta["first_epoch"]
        if initial_epoch is not None:
            self.initial_epoch = initial_epoch
        first_epoch = self.initial_epoch
        total_epochs = first_epoch + sum(plan.epochs for plan in plans)
        if self._iterator is None:
            self._iterator = iter(self.loader.dataset)
            atexit.register(_close_at_exit, weakref.ref(self))
        guard = cbs.StopOnNaN()
        monitors = [callback.name for callback in self.eval_callbacks]
        saver = cbs.BestBasicModel(self.basic_model, self.prefix, monitors, guard, self.history)
        with cbs.GracefulStop(guard) as stop, self.scope():
            self._run_stages(train_schedule, plans, meta, resume_dir, first_epoch, total_epochs, guard, saver, stop,
                             callbacks)
        self.best_model_path = saver.saved
        return self.history

    def _run_stages(self, train_schedule, plans, meta, resume_dir, first_epoch, total_epochs, guard, saver, stop,
                    callbacks):
        """The stage loop of ``train``: stages before a resume point are skipped, the resumed one restored."""
        for index, (stage, plan) in enumerate(zip(train_schedule, plans)):
            end_epoch = self.initial_epoch + plan.epochs
            if meta is not None and index < meta["stage"]:
                self.initial_epoch = end_epoch  # finished before the checkpoint
                continue
            resuming = meta is not None and index == meta["stage"]
            if resuming:  # the optimizer in the checkpoint was created at this epoch: same schedule offset
                self.initial_epoch = meta["optimizer_start_epoch"]
            self.basic_model.trainable = not plan.bottleneck_only  # bottleneckOnly: train the head(s) only
            saver.stage = index + 1
            try:
                self._compile_stage(index, stage, plan, total_epochs)
                step_offset = 0
                if resuming:
                    restore_model_and_optimizer(resume_dir, self.train_model, self.optimizer)
                    self._iterator.set_state(meta["iterator"])
                    self.initial_epoch, step_offset = meta["epoch"], meta["step"]
                    meta = None
                if self.verbose:
                    what = plan.margin_loss or plan.embedding_loss
                    frozen = ", backbone frozen" if plan.bottleneck_only else ""
                    print(f">>>> Stage {index + 1} ({plan.kind}{frozen}): {what}, epochs {self.initial_epoch + 1}.."
                          f"{end_epoch}, lr now {self._lr_or_base():.6f}")
                self._fit_stage(index, len(train_schedule), first_epoch, end_epoch, step_offset, guard, saver,
                                resume_dir if step_offset else None, list(callbacks), stop)
            finally:
                self.basic_model.trainable = True
            if guard.triggered:
                break
            self.initial_epoch = end_epoch

    def _compile_stage(self, index, stage, plan, total_epochs):
        """Build and compile the stage's training model; the optimizer follows from its trainable variables."""
        head = margin_head = None
        if plan.margin_loss is not None:
            head = self._stage_head(plan.margin_loss, plan.top_k)
            if not plan.margin_loss.plain_head:
                self.head = head  # the cosine classifier's kernel carries over to later margin stages
            margin_head = MarginHead(plan.margin_loss, name="margin")
        losses, loss_weights = self._stage_losses(index, stage, plan)
        center_loss = self.center_loss if "centerloss" in losses else None
        mixup = self.mixup if margin_head is not None else None
        if mixup is not None and (plan.margin_loss.initial_state() or plan.margin_loss.needs_norm):
            raise ValueError(f"Stage {index}: mixup_alpha needs a margin loss without running statistics or norms, "
                             f"received {plan.margin_loss}")
        self.train_model = build_train_model(self.basic_model, head, margin_head, self.augment, center_loss,
                                             self._distill_parts(plan, losses), mixup)
        if margin_head is not None:
            self._carry_margin_state(margin_head)
        signature = [(v.path, tuple(v.shape)) for v in self.train_model.trainable_variables]
        self.optimizer = self._stage_optimizer(stage, total_epochs, signature)
        self.train_model.compile(
            optimizer=self.optimizer,
            loss=losses,
            loss_weights=loss_weights,
            metrics={"top1": [OutputMean(name="accuracy")]} if margin_head is not None else None,
            jit_compile=True,
        )

    def _resume_point(self, train_schedule):
        """The checkpoint's counters and folder; errors when there is none or it is of another schedule."""
        directory = latest_state_dir(self.state_dir)
        if directory is None:
            raise DataError(f"{self.state_dir}: no checkpoint to resume from")
        meta = load_meta(directory)
        if meta["num_stages"] != len(train_schedule):
            raise ValueError(
                f"{directory}: checkpoint of a {meta['num_stages']}-stage schedule, received {len(train_schedule)} stages"
            )
        stored = meta.get("global_batch", self.global_batch_size)
        if stored != self.global_batch_size:
            replicas = data_parallel_size(self.distribution)
            raise ValueError(
                f"{directory}: the run was trained with a global batch of {stored}, this one has "
                f"{self.global_batch_size} ({replicas} data-parallel devices x batch_size "
                f"{self.global_batch_size // replicas}); resume with batch_size={stored / replicas:g} so every "
                "step sees the same images"
            )
        self.history.clear()
        self.history.update(meta["history"])
        return meta, directory

    def _fit_stage(self, stage_index, num_stages, first_epoch, end_epoch, step_offset, guard, saver, metrics_dir,
                   extra_callbacks, stop):
        """``fit`` one stage; a resumed epoch is a short first ``fit`` of its remaining batches."""
        steps = self.loader.steps_per_epoch
        with_embeddings = len(self.train_model.inputs) == 3  # stored teacher embeddings are an input
        batches = _TrainBatches(self._iterator, self.skipped_images, list(self.train_model.output),
                                self.teacher_embeddings, with_embeddings)

        def meta_fn(epoch, step):  # the stage whose training model the variables belong to, even when it is done
            return {
                "stage": stage_index, "epoch": epoch, "step": step, "num_stages": num_stages, "first_epoch": first_epoch,
                "optimizer_start_epoch": self._optimizer_start_epoch, "history": self.history,
                "global_batch": self.global_batch_size,
            }

        checkpoint = cbs.FullStateCheckpoint(
            self.state_dir, self.optimizer, meta_fn, batches.state_after, steps, self.checkpoint_every_steps,
            step_offset, guard,
        )
        stop.checkpoint = checkpoint
        callbacks = [
            cbs.RestoreEpochMetrics(metrics_dir),
            cbs.Throughput(self.global_batch_size),
            self.skipped_images,
            guard,
            cbs.LossScaleCollapse(self.optimizer, guard),
            *self.eval_callbacks,
            *([keras.callbacks.TensorBoard(self.tensorboard_dir)] if self.tensorboard_dir and is_primary() else []),
            saver,
            cbs.HistoryJSON(self.history_path, self.history, self._current_lr, guard),
            checkpoint,
            stop,
            *extra_callbacks,
        ]
        start = self.initial_epoch
        if step_offset:
            self.train_model.fit(
                iter(batches), epochs=start + 1, initial_epoch=start, steps_per_epoch=steps - step_offset,
                callbacks=callbacks, verbose=self.verbose, shuffle=False,
            )
            batches.rewind(checkpoint.trained)
            start += 1
        if start < end_epoch and not guard.triggered:
            self.train_model.fit(
                iter(batches), epochs=end_epoch, initial_epoch=start, steps_per_epoch=steps,
                callbacks=callbacks, verbose=self.verbose, shuffle=False,
            )
            batches.rewind(checkpoint.trained)

    def _lr_or_base(self):
        return self._current_lr() if self.optimizer is not None else self.lr_base

    def close(self):
        """Stop the loader's worker processes."""
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator = None

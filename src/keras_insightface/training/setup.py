"""``build_run(config)``: everything a run needs before its first stage, from a ``TrainConfig``: devices, the data
source and loader, the basic model (built, loaded or continued), the classifier, augmentation, teacher and
mixup (``StageParts``), the evaluation callbacks and the run's file prefix."""

import contextlib
import functools
import os

from keras_insightface.data.augment import FaceAugment
from keras_insightface.data.loader import describe_record
from keras_insightface.data.mixup import Mixup
from keras_insightface.errors import DataError, RunProblems
from keras_insightface.evaluation.verification import VerificationSet, eval_callback
from keras_insightface.heads.norm_dense import NormDense
from keras_insightface.heads.partial_fc import PartialFC
from keras_insightface.heads.vpl import NormDenseVPL
from keras_insightface.hosts import is_primary
from keras_insightface.saving import copy_weights_by_name, embedding_at, load_model, split_full_model
from keras_insightface.training import callbacks as cbs
from keras_insightface.training.distribute import data_parallel_size, resolve_distribution
from keras_insightface.training.model_setup import (
    continue_classifier, dtype_policy, load_basic_model, load_teacher, output_decay_factors, seed_run,
)
from keras_insightface.training.preflight import file_problems
from keras_insightface.training.run_data import make_data_loader, open_data
from keras_insightface.training.run_files import prefix_of
from keras_insightface.training.runner import Run
from keras_insightface.training.stage_parts import StageParts


def check_files(config):
    """Every problem of the run's files at once (``file_problems``, raised as ``RunProblems``) with the evaluation
    packs read and decoded once there (``VerificationSet``), and the TensorBoard writer's packages."""
    packs = {}

    def decode(path):
        packs[path] = VerificationSet(path)

    problems = file_problems(config.train_kwargs(), check_pack=decode)
    if problems:
        raise RunProblems(problems)
    if config.run.tensorboard_dir is not None:
        try:
            import tensorboard  # noqa: F401
            import tensorflow  # noqa: F401 - Keras's TensorBoard callback writes through tf.summary
        except ImportError:
            raise ImportError("tensorboard_dir needs TensorFlow and TensorBoard for writing summaries: "
                              "pip install keras_insightface[compat]") from None
    return [packs[path] for path in config.run.eval_paths]


def run_prefix(config):
    """``<dir>/<name>``: the folder of ``save_path`` (else ``checkpoint_dir``, created) and its stem."""
    prefix = prefix_of(config.run.save_path, config.run.checkpoint_dir)
    try:
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
    except OSError as error:
        raise DataError(f"{os.path.dirname(prefix)}: cannot create the run folder ({error.strerror or error})") from None
    return prefix


def build_parts(config, num_classes, steps_per_epoch, teacher_dim, distributed):
    """The ``StageParts`` of the run: the classifier (a full model's when it fits), augmentation, teacher, mixup,
    and the schedule and optimizer settings. Call inside the distribution's scope and the dtype policy."""
    data, model, head_config, augment, optimizer = (config.data, config.model, config.head, config.augment,
                                                    config.optimizer)
    seed, basic_model, classifier, full = config.run.seed, model.basic_model, None, model.model
    if basic_model is None and full is None:  # the seed: continue checkpoints/<save_path>, the full model it saved
        full = run_prefix(config) + os.path.splitext(config.run.save_path)[1]
        if not os.path.isfile(full):
            raise DataError(f"{full}: no model to continue; give basic_model (a buildin_models name such as 'r50', "
                            "a .keras / .h5 file or a keras.Model) or model (a full training model)")
    if isinstance(basic_model, int) and full is None:
        raise ValueError(f"basic_model={basic_model}: a layer index names the embedding inside model=, which is None")
    if full is not None:  # a full model (basic model + classifier): continue from both
        where, full = (full, load_model(full)) if isinstance(full, str) else ("model", full)
        if isinstance(basic_model, int):  # the seed's layer index of the embedding output
            basic_model, classifier = embedding_at(full, basic_model, where)
        else:
            basic_model, classifier = split_full_model(full, where)
    basic_model = load_basic_model(basic_model, model.output_layer, model.emb_shape, distributed, model.model_preset,
                                   model.weights)
    if model.pretrained is not None:
        copied, skipped = copy_weights_by_name(load_model(model.pretrained), basic_model, model.pretrained)
        print(f">>>> Pretrained {model.pretrained}: {len(copied)} layers loaded, {len(skipped)} kept as built"
              + (f" ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" if skipped else ""))
    if head_config.partial_fc_sample_rate < 1:
        head = PartialFC(num_classes, head_config.partial_fc_sample_rate, seed=seed, name="partial_fc")
    elif head_config.vpl_start_iters > 0:  # the seed's rule: below 50 it counts epochs
        start = head_config.vpl_start_iters
        start = start * steps_per_epoch if start < 50 else start
        head = NormDenseVPL(num_classes, start_iters=start, allowed_delta=head_config.vpl_allowed_delta,
                            name="norm_dense_vpl")
    else:
        head = NormDense(num_classes, name="norm_dense")
    head, dense_head = continue_classifier(classifier, head, basic_model, num_classes)
    layer = augment.augment
    if layer is None or isinstance(layer, dict):
        options = dict(random_status=augment.random_status, random_cutout_mask_area=augment.random_cutout_mask_area,
                       seed=seed, name="augment")
        layer = FaceAugment(**{**options, **(layer or {})})
    teacher = head_config.teacher_model_interf
    if teacher is not None and teacher_dim is not None:
        raise ValueError("the dataset already holds teacher embeddings (distill-data); drop teacher_model_interf")
    return StageParts(
        basic_model, head, layer, num_classes, data.image_per_class,
        load_teacher(teacher, distributed) if teacher is not None else None, teacher_dim,
        Mixup(augment.mixup_alpha, seed=seed, name="mixup") if augment.mixup_alpha > 0 else None,
        schedule_settings=dict(
            kind=optimizer.schedule_kind, lr_base=optimizer.lr_base,
            lr_min=optimizer.lr_min, lr_decay=optimizer.lr_decay, lr_decay_steps=optimizer.lr_decay_steps,
            warmup_epochs=optimizer.lr_warmup_steps, steps_per_epoch=steps_per_epoch, t_mul=optimizer.lr_t_mul,
        ),
        default_optimizer=optimizer.optimizer,
        optimizer_settings=dict(momentum=optimizer.momentum, weight_decay=optimizer.weight_decay,
                                lr_base=optimizer.lr_base,
                                decay_factors=output_decay_factors(head_config.output_weight_decay,
                                                                   optimizer.weight_decay)),
        mixed_precision=model.mixed_precision, dense_head=dense_head,
        steps_per_execution=config.run.steps_per_execution, sam_rho=optimizer.sam_rho,
        softmax_classifier=head_config.softmax_classifier, mining=data.samples_per_mining > 0,
    )


def build_run(config):
    """The ``Run`` of ``config`` (a ``TrainConfig``): see the module docstring."""
    packs = check_files(config)  # every missing or unusable file at once, before any work
    distribution = resolve_distribution(config.run.distribution, config.run.model_parallel)
    replicas = data_parallel_size(distribution)
    global_batch_size = config.data.batch_size * replicas
    source, teacher_embeddings = open_data(config)
    loader = make_data_loader(config, source, global_batch_size, teacher_embeddings is not None)
    iterator = None
    if config.data.samples_per_mining <= 0:  # decode workers start while the model is built (mining opens its own)
        iterator = iter(loader.dataset)
        if hasattr(iterator, "start_prefetch"):
            iterator.start_prefetch()
    prefix = run_prefix(config)
    seed_run(config.run.seed)  # weight init and augmentation draws repeat for a given seed
    scope = distribution.scope() if distribution is not None else contextlib.nullcontext()
    with dtype_policy(config.model.mixed_precision), scope:
        parts = build_parts(config, loader.num_classes, loader.steps_per_epoch,
                            None if teacher_embeddings is None else int(teacher_embeddings.shape[-1]),
                            distribution is not None)
    # evaluation batches are split over every device of every host, like the training batches (KerasEmbedder)
    eval_callbacks = [
        eval_callback(parts.basic_model, pack, global_batch_size, PCA_acc=True, verbose=is_primary(),
                      **({"eval_every_steps": config.run.eval_every_steps} if config.run.eval_every_steps else
                         {"eval_freq": config.run.eval_freq}))
        for pack in packs
    ]
    return Run(config, parts, source, loader, distribution, prefix, eval_callbacks,
               cbs.SkippedImages(functools.partial(describe_record, source)), teacher_embeddings, replicas,
               iterator=iterator)

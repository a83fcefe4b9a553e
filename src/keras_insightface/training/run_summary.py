"""What a run is about to do, printed once before its first step: data, model, schedule, devices and outputs, so a
log says what was trained without the config beside it.

What it prints for an r50 run on MS1M (``summary_lines(run, schedule, plans, first_epoch)``; the prefix ``>>>>``
starts each line)::

    run r50_arcface: outputs in checkpoints/ (r50_arcface_hist.json, _basic_*.keras, _state/, _train.log)
    data: faces_emore, 5822653 images, 85742 identities, 11372 steps per epoch of 512
    model: r50, 43.59 M parameters, 6.309 GFLOPs (multiply-accumulates, 112x112), 512-d embedding; ...
    schedule: 3 stage(s), epochs 1..50; optimizer sgd, lr 0.1 (cosine, warmup 1 epoch(s)); 1: ArcfaceLoss(scale=16) x 5; ...
    devices: 8 x gpu (NVIDIA H100 80GB HBM3, jax ...), data-parallel over 8, float32
"""

import os

import keras


def _count(model):
    return sum(int(keras.ops.size(weight)) for weight in model.weights)


def _gflops(model):
    from keras_insightface.flops import gflops

    try:
        return f"{gflops(model):.3f} GFLOPs (multiply-accumulates, {'x'.join(map(str, model.input_shape[1:3]))})"
    except Exception as error:  # an exotic layer the tracer cannot run must not stop the run
        return f"GFLOPs not counted ({type(error).__name__})"


def _loss_text(plan):
    """A stage's loss in a few characters: ``ArcfaceLoss(scale=16)``, ``TripletLoss``."""
    loss = plan.margin_loss or plan.embedding_loss
    scale = getattr(loss, "logit_scale", None)
    return type(loss).__name__ + (f"(scale={float(scale):g})" if scale is not None else "")


def devices_line(replicas=1, policy=None):
    """The devices the run trains on, e.g. ``1 x cpu (TFRT_CPU_0)``, and its data parallelism and precision."""
    try:
        devices = keras.distribution.list_devices()
    except Exception:  # a backend without list_devices
        devices = []
    kinds = {}
    for device in devices:
        kinds.setdefault(str(device).split(":")[0].lower(), []).append(str(device))
    text = ", ".join(f"{len(names)} x {kind}" for kind, names in kinds.items()) or keras.backend.backend()
    try:
        import jax

        if keras.backend.backend() == "jax":
            text += f" ({jax.devices()[0].device_kind}, jax {jax.__version__})"
    except ImportError:
        pass
    return f">>>> devices: {text}, data-parallel over {replicas}, {policy or keras.config.dtype_policy().name}"


def summary_lines(run, schedule, plans, first_epoch):
    """The summary of ``run`` about to train ``schedule`` (checked ``plans``) from ``first_epoch``."""
    config, parts = run.config, run.parts
    name = os.path.basename(run.prefix)
    folder = os.path.dirname(run.prefix) or "."
    lines = [f">>>> run {name}: outputs in {folder}/ ({name}_hist.json, _basic_*.keras, _state/, _train.log)"]
    data_name = os.path.basename(os.path.normpath(str(config.data.data_path)))
    lines.append(f">>>> data: {data_name}, {len(run.source)} images, {run.loader.num_classes} identities, "
                 f"{run.steps_per_epoch} steps per epoch of {run.global_batch_size}"
                 + (f" ({run.replicas} devices x {config.data.batch_size})" if run.replicas > 1 else ""))
    basic = parts.basic_model
    described = config.model.basic_model if isinstance(config.model.basic_model, str) else basic.name
    head = f"; classifier {parts.head.name}" if getattr(parts, "head", None) is not None else ""
    lines.append(f">>>> model: {described}, {_count(basic) / 1e6:.2f} M parameters, {_gflops(basic)}, "
                 f"{basic.output_shape[-1]}-d embedding{head} for {run.loader.num_classes} identities")
    total = first_epoch + sum(plan.epochs for plan in plans if not plan.bottleneck_only)
    optimizer = config.optimizer
    stages = "; ".join(f"{index + 1}: {_loss_text(plan)} x {plan.epochs}" for index, plan in enumerate(plans))
    warmup = f", warmup {optimizer.lr_warmup_steps:g} epoch(s)" if optimizer.lr_warmup_steps else ""
    lines.append(f">>>> schedule: {len(schedule)} stage(s), epochs {first_epoch + 1}..{total}; optimizer "
                 f"{optimizer.optimizer}, lr {optimizer.lr_base:g} ({optimizer.schedule_kind}{warmup}); {stages}")
    packs = ", ".join(callback.name for callback in run.eval_callbacks) or "none"
    lines.append(f">>>> evaluation: {packs}")
    lines.append(devices_line(run.replicas, config.model.mixed_precision))
    return lines

"""The seed's ``Train`` arguments that this project spells or runs differently, turned into ours before the
config is built: its positional order, and keywords with no option of the same name.

Example:
    >>> options, custom_objects = seed_train_options(("r50.h5", None), {"steps_per_execution": None})
    >>> sorted(options.items()), custom_objects
    ([('basic_model', 'r50.h5'), ('model', None), ('steps_per_execution', 1)], {})
"""

# The seed's ``Train.__init__`` arguments after ``data_path, save_path, eval_paths``, in its order.
SEED_POSITIONAL = (
    "basic_model", "model", "compile", "output_weight_decay", "custom_objects", "pretrained", "batch_size", "lr_base",
    "lr_decay", "lr_decay_steps", "lr_min", "lr_warmup_steps", "eval_freq", "random_status", "random_cutout_mask_area",
    "image_per_class", "samples_per_mining", "mixup_alpha", "partial_fc_split", "teacher_model_interf", "sam_rho",
    "vpl_start_iters", "vpl_allowed_delta", "steps_per_execution",
)
def seed_train_options(args, options):
    """``(options, custom_objects)``: ``options`` (our ``TrainConfig`` keywords) from the seed's positional
    ``args`` and keywords. ``compile`` is accepted and has no effect (a loaded model's optimizer is never reused:
    each stage builds its optimizer with the run's schedule); ``custom_objects`` is returned for loading models;
    ``partial_fc_split`` > 1 is a clear error."""
    if len(args) > len(SEED_POSITIONAL):
        raise TypeError(f"Train takes at most {3 + len(SEED_POSITIONAL)} positional arguments, received "
                        f"{3 + len(args)}")
    options = dict(options)
    for name, value in zip(SEED_POSITIONAL, args):
        if name in options:
            raise TypeError(f"Train got multiple values for argument {name!r}")
        options[name] = value
    options.pop("compile", None)
    custom_objects = options.pop("custom_objects", None) or {}
    if "steps_per_execution" in options and options["steps_per_execution"] is None:
        options["steps_per_execution"] = 1
    split = options.pop("partial_fc_split", 0) or 0
    if split > 1:
        raise ValueError(f"partial_fc_split={split}: the seed's class-split head is not built here; use "
                         f"partial_fc_sample_rate={1 / split:g} (Partial FC sampling that fraction of the classes)")
    return options, custom_objects

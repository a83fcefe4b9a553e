"""``Train``: the seed system's training driver — a dataset, a basic model, and a list of stage dicts.

Example:
    >>> from keras_insightface import Train, ArcfaceLoss
    >>> tt = Train("datasets/faces_emore", save_path="r50_arcface.keras", eval_paths=["datasets/lfw.bin"],
    ...            basic_model="r50", batch_size=512, lr_base=0.1, lr_warmup_steps=1)   # doctest: +SKIP
    >>> tt.train([{"loss": ArcfaceLoss(scale=16), "epoch": 5},
    ...           {"loss": ArcfaceLoss(scale=32), "epoch": 5},
    ...           {"loss": ArcfaceLoss(scale=64), "epoch": 40}])                          # doctest: +SKIP

Stages run back to back; epochs accumulate, the classifier (``NormDense``) and the optimizer carry over, and the
learning rate follows one warmup + cosine curve over all stages. ``Train`` is a facade: its keywords build a
``TrainConfig`` (``config.py``: every option, its meaning and default), ``setup.build_run`` makes the run's parts
from it, each stage trains a ``FaceTask`` (``task.py``) and ``runner.run_stages`` runs the stages, resume and
checkpoints.
"""

import atexit
import inspect
import weakref

from keras_insightface.training.config import TrainConfig, default_of, options
from keras_insightface.training.run_state import RunState
from keras_insightface.training.runner import run_stages
from keras_insightface.training.seed_options import SEED_POSITIONAL, seed_train_options
from keras_insightface.training.run_data import close_iterator, reopen_data
from keras_insightface.training.setup import build_run


def _close_at_exit(trainer_ref):
    """Stop a live trainer's decode workers before interpreter teardown, when nobody called ``close()``."""
    trainer = trainer_ref()
    if trainer is not None:
        trainer.close()


class Train:
    """Train a face-recognition model with a schedule of stages.

    Args:
        data_path: ``.rec`` folder/file, class-folder root, ``path<TAB>label`` list file or npz list.
        save_path: file name of the run, e.g. ``r50_arcface.keras``; outputs go to ``checkpoint_dir`` unless it
            holds a folder: ``<name>_hist.json``, ``<name>_basic_<set>_epoch_<E>_<acc>.keras``, ``<name>_state/``.
        eval_paths: ``.bin`` verification packs; the first one decides which basic model is kept as best.
        **options: any other option of ``TrainConfig`` by name (``keras-insightface train --help`` lists them
            with their defaults): ``basic_model``, ``batch_size``, ``lr_base``, ``random_status``, ...

    Stage dicts: ``loss`` (a margin loss, e.g. ``ArcfaceLoss(scale=16)``, or ``"softmax"`` for a plain ``Dense``
    classifier), ``epoch``, optional ``optimizer`` (a Keras optimizer, or ``"sgd"`` = L2SGD with ``weight_decay``
    as coupled L2, ``"sgdw"`` / ``"adamw"`` with a decoupled decay of ``weight_decay * lr`` per step,
    ``"lookahead_sgd"`` etc. for ``Lookahead`` around one), ``centerloss`` (weight of the center loss, centers kept
    across stages), ``triplet`` (weight of an in-batch triplet loss) with its margin ``alpha`` (0.35) and
    ``tripletKind`` (``batch_hard_cosine`` default, ``batch_hard_euclidean``, ``batch_all``, ``arc_batch_hard``),
    ``lossWeight``, ``lossTopK``, ``bottleneckOnly``, ``type`` and ``distill`` (see ``stages.py``).
    """

    def __init__(self, data_path, save_path, eval_paths=(), *args, **options):
        import keras

        options, custom_objects = seed_train_options(args, options)
        self.config = TrainConfig.from_kwargs(data_path=data_path, save_path=save_path, eval_paths=list(eval_paths),
                                              **options)
        with keras.saving.custom_object_scope(custom_objects):
            self.run = build_run(self.config)
        self.parts = self.run.parts
        self.basic_model, self.num_classes = self.parts.basic_model, self.loader.num_classes
        self.global_batch_size, self.eval_callbacks = self.run.global_batch_size, self.run.eval_callbacks
        self.prefix, self.history_path = self.run.prefix, self.run.history_path
        self.history, self.initial_epoch, self.best_model_path, self.stop_reason = {}, 0, None, None
        atexit.register(_close_at_exit, weakref.ref(self))  # its decode workers are already starting

    @property
    def lr_scheduler(self):
        """A seed scheduler (``myCallbacks.CosineLrSchedulerEpoch(...)`` etc.) that replaces the configured
        schedule when set, as the seed's ``tt.lr_scheduler = ...``; None: the configured one."""
        return self.run.parts.lr_scheduler

    @lr_scheduler.setter
    def lr_scheduler(self, scheduler):
        if scheduler is not None and not hasattr(scheduler, "schedule"):
            raise TypeError(f"lr_scheduler must be a scheduler of keras_insightface.myCallbacks (CosineLrScheduler, "
                            f"CosineLrSchedulerEpoch), received {type(scheduler).__name__}")
        self.run.parts.lr_scheduler = scheduler

    def reset_dataset(self, data_path=None):
        """As the seed's: train the next stages on ``data_path`` (a new dataset of the same classes), or read the
        current one again from its start."""
        reopen_data(self.run, data_path)

    @property
    def source(self):
        """The training data's source (it changes with ``reset_dataset``)."""
        return self.run.source

    @property
    def loader(self):
        """The training data's grain loader (opened again when stages switch to or from identity groups)."""
        return self.run.loader

    def scope(self):
        """The context every model variable of the run is made and trained in: the distribution's scope."""
        return self.run.scope()

    def train(self, train_schedule, initial_epoch=None, resume=False, callbacks=()):
        """Run each stage dict (``loss``, ``epoch``, optional ``optimizer``) in turn; returns the history dict.

        A stage without ``loss`` trains with the loss before it; ``initial_epoch`` (the seed's second argument)
        starts the epoch count there, keeping that many epochs of an existing history.

        ``resume=True`` continues the same schedule from the latest full-state checkpoint in ``<name>_state/``:
        the same batches, augmentation draws and updates as if the run had not stopped. ``callbacks`` are extra
        Keras callbacks, called after the built-in ones, that see one run across the stages. ``stop_reason`` says
        afterwards why the run stopped early (a NaN loss, a collapsed loss scale, ``SIGTERM``), or is None.
        """
        if isinstance(train_schedule, dict):
            train_schedule = [train_schedule]
        state = RunState(history=self.history)
        start = self.initial_epoch if initial_epoch is None else initial_epoch
        self.initial_epoch = run_stages(self.run, train_schedule, state, start, resume, callbacks)
        self.best_model_path, self.stop_reason = state.best_model_path, state.stop_reason
        return self.history

    def close(self):
        """Stop the loader's worker processes."""
        close_iterator(self.run)


def _signature():
    """``Train(data_path, save_path, eval_paths=(), <the seed's arguments in its order>, *, <every other option>)``
    for ``help()``."""
    parameters = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    parameters += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                   for name in ("data_path", "save_path")]
    parameters.append(inspect.Parameter("eval_paths", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=()))
    known = options()
    seed_only = {"compile": True, "custom_objects": None, "partial_fc_split": 0}
    for name in SEED_POSITIONAL:  # the seed's order, so its positional calls bind as in the seed
        default = default_of(known[name][1]) if name in known else seed_only[name]
        parameters.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default))
    for name, (_, field) in known.items():
        if name not in ("data_path", "save_path", "eval_paths", *SEED_POSITIONAL):
            parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default_of(field)))
    return inspect.Signature(parameters)


Train.__init__.__signature__ = _signature()

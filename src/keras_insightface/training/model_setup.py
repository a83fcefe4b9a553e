"""The run's model before its first stage: the basic model (built, loaded or continued), a full model's classifier
carried into the head, the in-step teacher, and the classifier's weight decay.

Example:
    >>> output_decay_factors(0, weight_decay=5e-4)
    {'norm_dense_w': 0.0, 'dense_softmax/kernel': 0.0, 'euclidean_dense/kernel': 0.0}
    >>> output_decay_factors(2, 5e-4)["dense_softmax/kernel"]
    2.0
"""

import contextlib

import keras

from keras_insightface.errors import DataError
from keras_insightface.heads.euclidean_dense import EuclideanDense
from keras_insightface.heads.norm_dense import NormDense
from keras_insightface.models import buildin_models
from keras_insightface.saving import load_model
from keras_insightface.training.distribute import host_values

CLASSIFIER_KERNELS = ("norm_dense_w", "dense_softmax/kernel", "euclidean_dense/kernel")


@contextlib.contextmanager
def dtype_policy(policy):
    """Layers made inside use ``policy`` (e.g. ``mixed_bfloat16``); the global policy is put back after."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def seed_run(seed):
    """``keras.utils.set_random_seed(seed)`` (Python, NumPy and Keras's global seed: weight initialisation and
    augmentation draws repeat for a seed) without importing TensorFlow, which that function does whenever it is
    installed only to seed ``tf.data``: 4 s of every run's start where the export extra is installed."""
    import random
    import sys

    import numpy as np

    if "tensorflow" in sys.modules:
        keras.utils.set_random_seed(seed)
        return
    try:
        from keras.src.backend.common import global_state
        from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR
        from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED
    except ImportError:  # another Keras layout: the public function, TensorFlow import included
        keras.utils.set_random_seed(seed)
        return
    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
    global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)
    if keras.backend.backend() == "torch":
        import torch

        torch.manual_seed(seed)


def load_basic_model(basic_model, output_layer="GDC", emb_shape=512, distributed=False, preset=None, weights=None):
    """The embedding model from a ``buildin_models`` name (with ``preset`` and ``weights``), a model file
    (``.keras`` / seed ``.h5``) or a model (remade when ``distributed``: variables made outside the distribution's
    scope have no layout)."""
    if isinstance(basic_model, str) and basic_model.endswith((".keras", ".h5")):
        return load_model(basic_model)
    if isinstance(basic_model, str):
        return buildin_models(basic_model, output_layer=output_layer, emb_shape=emb_shape, preset=preset,
                              weights=weights)
    if distributed:
        weights, basic_model = basic_model.get_weights(), keras.models.clone_model(basic_model)
        basic_model.set_weights(weights)
    return basic_model


def output_decay_factors(output_weight_decay, weight_decay):
    """The seed's ``output_weight_decay`` as optimizer ``decay_factors`` for the classifier kernels: 0 = no
    decay, >= 1 = that many times ``weight_decay``, in (0, 1) = that decay value itself."""
    if output_weight_decay < 0:
        raise ValueError(f"output_weight_decay must be >= 0, received {output_weight_decay}")
    if 0 < output_weight_decay < 1:
        if not weight_decay:
            raise ValueError("output_weight_decay in (0, 1) is a decay value relative to weight_decay, which is 0")
        factor = output_weight_decay / weight_decay
    else:
        factor = float(output_weight_decay)
    return {} if factor == 1 else {name: factor for name in CLASSIFIER_KERNELS}


def continue_classifier(classifier, head, basic_model, num_classes):
    """``(head, dense_head)`` starting from a full model's classifier kernel when it fits (NormDense, sub-centers
    included, or a plain Dense for softmax stages); otherwise ``(head, None)`` and a note that a new one is
    trained."""
    if classifier is None:
        return head, None
    kernel = host_values([classifier.kernel])[0]  # gathered when the kernel is split across hosts
    dims = int(basic_model.output_shape[-1])
    dense_head = None
    if isinstance(classifier, NormDense) and kernel.shape[0] == dims and kernel.shape[1] % num_classes == 0:
        if kernel.shape[1] != num_classes:
            head = NormDense(num_classes, loss_top_k=kernel.shape[1] // num_classes, name="norm_dense")
        head.build((None, dims))
        head.kernel.assign(kernel)
    elif type(classifier) in (keras.layers.Dense, EuclideanDense) and kernel.shape == (dims, num_classes):
        dense_head = type(classifier).from_config(classifier.get_config())
        dense_head.build((None, dims))
        dense_head.set_weights(host_values(classifier.weights))
    else:
        print(f">>>> The model's classifier {classifier.name} {kernel.shape} does not fit {num_classes} classes of "
              f"{dims}-d embeddings: a new one is trained")
        return head, None
    print(f">>>> Continuing from the model's classifier {classifier.name} {kernel.shape}")
    return head, dense_head


def load_teacher(teacher, distributed=False):
    """A frozen teacher embedding model run inside the training step, from a model or a ``.keras`` / ``.h5``."""
    if isinstance(teacher, str) and not teacher.endswith((".keras", ".h5")):
        raise DataError(f"{teacher}: an in-step teacher must be a .keras/.h5 model; for ONNX or TorchScript "
                        "teachers store their embeddings first with keras-insightface distill-data")
    teacher = load_basic_model(teacher, distributed=distributed)
    teacher.trainable = False
    return keras.Model(teacher.inputs[0], teacher.outputs[0], name="teacher")  # its own name, beside the student

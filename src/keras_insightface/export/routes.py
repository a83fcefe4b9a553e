"""The two ways from a Keras (JAX) model to a TensorFlow graph that the converters take.

* ``jax_function``: ``jax2tf`` of the model's inference function with the weights as constants and a
  symbolic batch; in-process and quick. TFLite's converter lowers the StableHLO inside, folding the constant
  arithmetic (BN scale/shift, normalisation).
* ``tensorflow_saved_model``: the model saved to ``.keras`` and rebuilt with Keras's TensorFlow backend in a
  subprocess (``tf_backend``), written as a SavedModel of plain TF ops. Slower (a second Python process), but
  every layer the TensorFlow backend runs converts, and the SavedModel runs anywhere TensorFlow does.

Example (the JAX route on a small model):
    >>> import keras, tensorflow as tf
    >>> inputs = keras.Input((32, 32, 3))
    >>> x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    >>> fn = jax_function(keras.Model(inputs, keras.layers.Dense(8)(x)))
    >>> fn(tf.zeros((3, 32, 32, 3))).shape
    TensorShape([3, 8])
"""

import os
import subprocess
import sys

import numpy as np

from keras_insightface.export.metadata import INPUT_NAME

SUBPROCESS_TIMEOUT_S = 3600


class ExportError(RuntimeError):
    """A converter could not translate the model; the message says which step and why."""


def jax_function(model):
    """A TF concrete function ``image (B, H, W, 3) float32 -> embedding`` computing ``model`` at inference."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    trainable = [np.asarray(v) for v in model.trainable_variables]
    non_trainable = [np.asarray(v) for v in model.non_trainable_variables]

    def forward(images):
        return model.stateless_call(trainable, non_trainable, images, training=False)[0]

    shape = tuple(model.input_shape[1:])
    polymorphic = "(b, " + ", ".join(str(d) for d in shape) + ")"
    function = tf.function(
        jax2tf.convert(forward, polymorphic_shapes=[polymorphic]),
        autograph=False,
        input_signature=[tf.TensorSpec((None, *shape), tf.float32, name=INPUT_NAME)],
    )
    return function.get_concrete_function()


def tensorflow_saved_model(model, workdir):
    """Write ``model`` as a TensorFlow-backend SavedModel under ``workdir``; returns its directory."""
    model_path = os.path.join(workdir, "model.keras")
    out_dir = os.path.join(workdir, "saved_model")
    model.save(model_path)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "keras_insightface.export.tf_backend", model_path, out_dir]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise ExportError(f"{model.name}: the TensorFlow-backend SavedModel export failed:\n{tail}")
    return out_dir

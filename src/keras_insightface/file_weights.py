"""Variables of a model whose weights come from a file start as zeros instead of running their random initialisers.

Under JAX each random initialiser (``GlorotUniform``, ``HeNormal``, ...) is an XLA program compiled for its shape:
opening an r50 ``.keras`` compiled 30 of them, 9.6 s of its 11.8 s load on the 2-core machine with an empty
compilation cache, for values the file then overwrites. Inside ``weights_from_file()`` a variable whose
initialiser is random gets NumPy zeros put on the device (no compilation); the others (constants: BatchNorm's
moving statistics, seed-generator states) keep theirs, so anything a file does not hold starts as it would have.

Example:
    >>> import keras
    >>> with weights_from_file():
    ...     layer = keras.layers.Dense(3)
    ...     layer.build((None, 4))
    >>> float(abs(keras.ops.convert_to_numpy(layer.kernel)).max())
    0.0
"""

import contextlib

import numpy as np


@contextlib.contextmanager
def weights_from_file():
    """Inside, variables with a random initialiser are created as zeros (their values are about to be loaded)."""
    try:  # Keras's variable class of the active backend and its random initialisers' base class
        from keras.src.backend import Variable
        from keras.src.initializers.random_initializers import RandomInitializer
    except ImportError:  # another Keras layout: initialisers run as usual
        yield
        return
    original = Variable._initialize_with_initializer

    def initialize(variable, initializer):
        if not isinstance(initializer, RandomInitializer):
            return original(variable, initializer)
        try:
            zeros = np.zeros(variable.shape, dtype=np.dtype(variable.dtype))
        except TypeError:  # a dtype NumPy does not know by name
            return original(variable, initializer)
        return variable._initialize(variable._convert_to_tensor(zeros))

    Variable._initialize_with_initializer = initialize
    try:
        yield
    finally:
        Variable._initialize_with_initializer = original

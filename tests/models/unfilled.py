"""Models built without drawing initial values: drawing the random initial values of a large model costs seconds,
and tests that count parameters or set every weight themselves do not need them."""

import keras

from keras_insightface.backbones import get_backbone


def unfilled(build):
    """``build()`` with variables that have shapes but no values, then a cleared session, so that nothing
    initialises them later (a test that runs the model sets every weight first)."""
    try:
        with keras.StatelessScope(initialize_variables=False):
            return build()
    finally:
        keras.utils.clear_session()


def unfilled_backbone(name, size=112, **options):
    """Registry backbone ``name`` on a ``size`` x ``size`` RGB input as a model, its weights not set."""

    def build():
        inputs = keras.Input((size, size, 3))
        return keras.Model(inputs, get_backbone(name)(inputs, **options))

    return unfilled(build)

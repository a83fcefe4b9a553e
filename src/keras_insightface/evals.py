"""The seed's ``evals`` module name: ``from keras_insightface import evals; evals.eval_callback(basic_model, bin)``.

Example:
    >>> from keras_insightface import evals
    >>> evals.eval_callback.__name__
    'eval_callback'
"""

from keras_insightface.evaluation.verification import (
    eval_callback, evaluate_bin, half_split_weighted_cosine_similarity,
)

__all__ = ["eval_callback", "evaluate_bin", "half_split_weighted_cosine_similarity"]

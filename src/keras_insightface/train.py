"""The seed's ``train`` module name: ``from keras_insightface import train; tt = train.Train(...)``.

Example:
    >>> from keras_insightface import train
    >>> train.Train.__name__
    'Train'
"""

from keras_insightface.training.train import Train

__all__ = ["Train"]

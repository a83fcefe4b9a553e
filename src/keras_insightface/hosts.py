"""Which host this process is in a multi-host JAX run: every layer that writes files or prints reports asks here
(process 0 does), so a run on several hosts writes each file once.

Example:
    >>> process_count(), process_index(), is_primary()
    (1, 0, True)
"""

import keras


def process_count():
    """The hosts (JAX processes) taking part in the run; 1 on other backends."""
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def process_index():
    """This host's index among ``process_count()`` (0 on other backends)."""
    if keras.backend.backend() != "jax":
        return 0
    import jax

    return jax.process_index()


def is_primary():
    """Whether this host writes the run's files and prints its reports (process 0)."""
    return process_index() == 0

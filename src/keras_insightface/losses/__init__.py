"""losses of keras_insightface."""

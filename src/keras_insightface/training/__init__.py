"""training of keras_insightface."""

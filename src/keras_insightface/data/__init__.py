"""data of keras_insightface."""

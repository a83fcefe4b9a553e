"""heads of keras_insightface."""

"""evaluation of keras_insightface."""

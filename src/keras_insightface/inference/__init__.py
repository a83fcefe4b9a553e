"""inference of keras_insightface: open any model into one embedder, read and align face images, embed them."""

"""Custom Keras layers shared by the backbones."""

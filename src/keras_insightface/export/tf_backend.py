"""Write a SavedModel of a ``.keras`` basic model with Keras's TensorFlow backend (run in a subprocess).

The JAX route (``jax2tf``) gives one ``XlaCallModule`` op holding StableHLO; TensorFlow's TFLite converter
lowers most of it, but not the dynamic gathers that tensor slicing becomes under a dynamic batch (the ViT's
q/k/v split, BoTNet's relative logits). Rebuilding the model with the TensorFlow backend gives plain TF ops that
the converter and SavedModel users take without restriction. Keras picks its backend once per process, so this
runs as ``KERAS_BACKEND=tensorflow python -m keras_insightface.export.tf_backend MODEL.keras OUT_DIR``.

The SavedModel has one ``serving_default`` signature: input ``image`` (float32 NHWC, dynamic batch), output
``embedding``.
"""

import sys

from keras_insightface.export.metadata import INPUT_NAME, OUTPUT_NAME


def write_saved_model(model_path, out_dir):
    """Load ``model_path`` (TensorFlow backend) and write its SavedModel to ``out_dir``."""
    import keras

    from keras_insightface.saving import load_model

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"run with KERAS_BACKEND=tensorflow, not {keras.backend.backend()}")
    model = load_model(model_path)
    spec = keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32", name=INPUT_NAME)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", lambda image: {OUTPUT_NAME: model(image, training=False)}, input_signature=[spec])
    archive.write_out(out_dir, verbose=False)


if __name__ == "__main__":
    write_saved_model(sys.argv[1], sys.argv[2])

"""Helper run as a script under a given KERAS_BACKEND: build backbones, load shared weights, save outputs.

    KERAS_BACKEND=torch python tests/backbones/backend_outputs.py OUT_DIR name [name ...]
reads OUT_DIR/<name>.weights.h5 and OUT_DIR/inputs.npy, writes OUT_DIR/<name>.<backend>.npy.
"""

import os
import sys

import numpy as np


def build(name):
    from keras_insightface.models import buildin_models

    return buildin_models(name, emb_shape=32, weights=None)  # keras.applications ones: no ImageNet download


def main(out_dir, names):
    import keras

    inputs = np.load(os.path.join(out_dir, "inputs.npy"))
    for name in names:
        model = build(name)
        model.load_weights(os.path.join(out_dir, f"{name}.weights.h5"))
        outputs = keras.ops.convert_to_numpy(model(inputs, training=False))
        np.save(os.path.join(out_dir, f"{name}.{keras.backend.backend()}.npy"), outputs)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

"""What an exported embedding model expects and returns, stored inside the exported file.

One flat dict of strings (lists and numbers JSON-encoded), the same for every format:

* ONNX: ``metadata_props`` entries (plus ``producer_name`` / ``producer_version``);
* TFLite: a metadata entry named ``keras_insightface`` in the flatbuffer, holding the JSON;
* SavedModel: ``assets/keras_insightface.json`` inside the SavedModel directory.

``read_metadata`` reads it back from any of the three.

Example:
    >>> import keras
    >>> from keras_insightface.export.metadata import build_metadata
    >>> inputs = keras.Input((112, 112, 3))
    >>> x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 128, offset=-127.5 / 128)(inputs))
    >>> meta = build_metadata(keras.Model(inputs, keras.layers.Dense(16)(x)), "onnx")
    >>> meta["input_layout"], meta["input_shape"], meta["embedding_size"], meta["normalization"]
    ('NHWC', '[-1, 112, 112, 3]', '16', '(x - 127.5) / 128, inside the model')
"""

import json
import os

import keras

import keras_insightface
from keras_insightface.errors import DataError

KEY = "keras_insightface"
ASSET = "keras_insightface.json"
INPUT_NAME = "image"
OUTPUT_NAME = "embedding"
NORMALIZE_SCALE, NORMALIZE_OFFSET = 1 / 128, -127.5 / 128


def normalization(model):
    """``(x - 127.5) / 128, inside the model`` when a Rescaling right after the input does it."""
    for layer in model.layers[:3]:
        if isinstance(layer, keras.layers.Rescaling):
            if abs(float(layer.scale) - NORMALIZE_SCALE) < 1e-9 and abs(float(layer.offset) - NORMALIZE_OFFSET) < 1e-9:
                return "(x - 127.5) / 128, inside the model"
            return f"x * {float(layer.scale)} + {float(layer.offset)}, inside the model"
    return "none found inside the model: feed the values it was trained on"


def build_metadata(model, format, fp16=False, folded_bn=(), route=""):
    """The metadata dict for ``model`` exported to ``format``."""
    height, width, channels = model.input_shape[1:]
    values = {
        "producer": f"keras_insightface {keras_insightface.__version__}",
        "model_name": model.name,
        "format": format,
        "input_name": INPUT_NAME,
        "input_layout": "NHWC",
        "input_shape": [-1, height, width, channels],
        "input_dtype": "float32",
        "input_color": "RGB",
        "input_range": "0..255 (uint8 images cast to float32)",
        "normalization": normalization(model),
        "output_name": OUTPUT_NAME,
        "embedding_size": model.output_shape[-1],
        "output_note": "raw embedding, not L2-normalised; compare with cosine similarity",
        "fp16": fp16,
        "folded_batch_norms": len(folded_bn),
        "route": route,
    }
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in values.items()}


def read_metadata(path):
    """The metadata dict of an exported ``.onnx``, ``.tflite`` or SavedModel directory."""
    path = os.fspath(path)
    if os.path.isdir(path):
        asset = os.path.join(path, "assets", ASSET)
        if not os.path.isfile(asset):
            raise DataError(f"{path}: no assets/{ASSET} in this SavedModel directory")
        with open(asset, encoding="utf-8") as file:
            return json.load(file)
    if path.endswith(".onnx"):
        import onnx

        proto = onnx.load(path, load_external_data=False)
        return {prop.key: prop.value for prop in proto.metadata_props}
    if path.endswith(".tflite"):
        from keras_insightface.export.tflite import read_tflite_metadata

        with open(path, "rb") as file:
            return read_tflite_metadata(file.read(), KEY)
    raise DataError(f"{path}: not an exported model (.onnx, .tflite or a SavedModel directory)")

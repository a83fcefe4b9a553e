"""The optional packages an export needs, imported with an error that names the extra to install.

Export pulls in TensorFlow (jax2tf, the TFLite converter, SavedModel), tf2onnx, onnx and onnxruntime, and
onnxconverter-common for ``fp16`` ONNX; none of them is a core dependency of the package. They are the
``export`` extra: ``pip install keras_insightface[export]``.

Example:
    >>> from keras_insightface.export.deps import required_modules
    >>> required_modules("onnx", fp16=True)
    ('tensorflow', 'tf2onnx', 'onnx', 'onnxruntime', 'onnxconverter_common')
"""

import importlib

EXTRA = "export"
INSTALL = f"pip install keras_insightface[{EXTRA}]"
MODULES = {
    "tflite": ("tensorflow",),
    "savedmodel": ("tensorflow",),
    "onnx": ("tensorflow", "tf2onnx", "onnx", "onnxruntime"),
}
FP16_MODULES = {"onnx": ("onnxconverter_common",)}


class MissingExtraError(ImportError):
    """An export dependency is not installed; the message names the package and the extra."""


def required_modules(format, fp16=False):
    """Module names that exporting to ``format`` (with ``fp16``) imports."""
    return MODULES[format] + (FP16_MODULES.get(format, ()) if fp16 else ())


def require(format, fp16=False):
    """Import every module ``format`` needs; raise ``MissingExtraError`` naming the first missing one."""
    for name in required_modules(format, fp16):
        try:
            importlib.import_module(name)
        except ImportError as error:
            what = f"{format} export" + (" with fp16" if fp16 else "")
            raise MissingExtraError(
                f"{what} needs the '{name}' package, which is not installed ({error}); {INSTALL}"
            ) from None

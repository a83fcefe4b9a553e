"""``tf.train.Example`` decoded from protobuf wire format by hand: no TensorFlow, no generated protobuf code.

The messages (tensorflow/core/example/{example,feature}.proto)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }       # map entries: { string key = 1; Feature value = 2; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1; }
    Int64List { repeated int64 value = 1; }

Numbers are read packed (one length-delimited run) and unpacked (one field per value), as protobuf parsers must
accept both. Fields this reader does not know are skipped; a message repeated in one payload merges as protobuf
merges (a repeated map key: the last wins; a list given twice: concatenated). Malformed bytes are a ``DataError``.

Example:
    >>> payload = bytes.fromhex("0a190a170a056c6162656c120e1a0c0a0afdffffffffffffffff01")  # label: int64_list [-3]
    >>> parse_example(payload)["label"]
    Feature(kind='int64_list', values=array([-3]))
"""

from typing import NamedTuple

import numpy as np

from keras_insightface.errors import DataError

KINDS = {1: "bytes_list", 2: "float_list", 3: "int64_list"}
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


class Feature(NamedTuple):
    """One feature: ``kind`` (bytes_list, float_list, int64_list or None when unset) and its ``values`` (a list of
    bytes, a float32 array or an int64 array)."""

    kind: object
    values: object


def _varint(data, pos):
    """``(value, next position)`` of the unsigned varint at ``pos``."""
    if pos < len(data) and data[pos] < 0x80:  # one byte: tags, lengths under 128, small labels
        return data[pos], pos + 1
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise DataError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise DataError("varint longer than 10 bytes")


def _fields(data):
    """Yield ``(field number, wire type, value)`` of a message: an int for varints and fixed fields, a memoryview
    for length-delimited ones."""
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise DataError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _LENGTH:
            size, pos = _varint(data, pos)
            if pos + size > end:
                raise DataError(f"field {number}: {size} bytes announced, {end - pos} left")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (_FIXED32, _FIXED64):
            size = 4 if wire == _FIXED32 else 8
            if pos + size > end:
                raise DataError(f"field {number}: truncated fixed-size value")
            value, pos = data[pos:pos + size], pos + size
        else:
            raise DataError(f"field {number}: unsupported wire type {wire} (groups are not used by Example)")
        yield number, wire, value


def _signed64(value):
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _list_values(kind, data):
    """The values of a BytesList / FloatList / Int64List message."""
    if kind == "bytes_list":
        return [bytes(value) for number, wire, value in _fields(data) if number == 1 and wire == _LENGTH]
    runs = []
    for number, wire, value in _fields(data):
        if number != 1:
            continue
        if kind == "float_list" and wire == _LENGTH:
            if len(value) % 4:
                raise DataError(f"packed float_list of {len(value)} bytes is not whole float32 values")
            runs.append(np.frombuffer(value, dtype="<f4"))
        elif kind == "float_list" and wire == _FIXED32:
            runs.append(np.frombuffer(value, dtype="<f4"))
        elif kind == "int64_list" and wire == _LENGTH:
            values, pos = [], 0
            while pos < len(value):
                number_value, pos = _varint(value, pos)
                values.append(_signed64(number_value))
            runs.append(np.array(values, dtype=np.int64))
        elif kind == "int64_list" and wire == _VARINT:
            runs.append(np.array([_signed64(value)], dtype=np.int64))
        else:
            raise DataError(f"{kind} value with wire type {wire}")
    dtype = np.float32 if kind == "float_list" else np.int64
    return np.concatenate(runs).astype(dtype) if runs else np.zeros(0, dtype=dtype)


def _merge(old, kind, values):
    if old is not None and old.kind == kind:
        return Feature(kind, old.values + values if kind == "bytes_list" else np.concatenate([old.values, values]))
    return Feature(kind, values)


def _parse_feature(data):
    feature = Feature(None, [])
    for number, wire, value in _fields(data):
        if number in KINDS and wire == _LENGTH:
            feature = _merge(feature, KINDS[number], _list_values(KINDS[number], value))
    return feature


def _parse_features(data, out):
    for number, wire, entry in _fields(data):
        if number != 1 or wire != _LENGTH:
            continue
        key, value = b"", None
        for entry_number, entry_wire, entry_value in _fields(entry):
            if entry_number == 1 and entry_wire == _LENGTH:
                key = bytes(entry_value)
            elif entry_number == 2 and entry_wire == _LENGTH:
                value = entry_value if value is None else bytes(value) + bytes(entry_value)
        try:
            name = key.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"feature name {key[:40]!r} is not UTF-8") from None
        out[name] = _parse_feature(value if value is not None else b"")


def parse_example(payload):
    """The features of a serialized ``tf.train.Example``: ``{name: Feature(kind, values)}``."""
    data = memoryview(payload)
    features = {}
    for number, wire, value in _fields(data):
        if number == 1 and wire == _LENGTH:
            _parse_features(value, features)
    return features

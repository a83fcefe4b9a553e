"""CRC-32C (Castagnoli), the checksum of TFRecord framing, computed with numpy: no compiled extension needed.

The CRC of a message is linear in its bytes, so it is the XOR of one table entry per byte, the table picked by the
byte's distance to the end of its chunk. ``_TABLES[d][b]`` is the CRC register left by byte ``b`` followed by ``d``
zero bytes; a message is cut into chunks of ``CHUNK`` bytes (the first one padded in front with zeros, which leave
the register 0), each chunk's CRC is one gather and one XOR reduction, and the chunks are chained by the same tables
(the running register is XORed into the next chunk's first four bytes). The initial all-ones register is XORed into
the first four message bytes the same way. Inputs shorter than 16 bytes take the plain byte loop.

``masked_crc32c`` is TensorFlow's masked form: rotated right by 15 bits plus ``0xA282EAD8``.

Example:
    >>> hex(crc32c(b"123456789"))
    '0xe3069283'
    >>> crc32c(bytes(range(256)) * 40) == crc32c_bytewise(bytes(range(256)) * 40)
    True
"""

import numpy as np

POLYNOMIAL = 0x82F63B78  # Castagnoli, bit-reversed
CHUNK = 1024
MASK_DELTA = 0xA282EAD8
_SHORT = 16


def _make_tables(count):
    """``(count, 256)`` uint32: row ``d`` is the register after byte ``b`` then ``d`` zero bytes, from 0."""
    row = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        row = np.where(row & 1, (row >> 1) ^ np.uint32(POLYNOMIAL), row >> 1).astype(np.uint32)
    tables = np.empty((count, 256), dtype=np.uint32)
    tables[0] = row
    for d in range(1, count):
        previous = tables[d - 1]
        tables[d] = row[previous & 0xFF] ^ (previous >> 8)
    tables.flags.writeable = False
    return tables


_TABLES = _make_tables(CHUNK)
_BYTE_TABLE = _TABLES[0].tolist()
_SHIFT_TABLES = [_TABLES[CHUNK - 1 - j].tolist() for j in range(4)]  # register through one whole zero chunk
_CHUNK_GATHER = (np.arange(CHUNK - 1, -1, -1, dtype=np.int64) * 256)[None, :]  # row offset of each chunk column
_FLAT = _TABLES.reshape(-1)


def crc32c_bytewise(data, crc=0):
    """CRC-32C of ``data`` one byte at a time, continuing from ``crc`` (the reference the fast path is checked by)."""
    register = crc ^ 0xFFFFFFFF
    for byte in bytes(data):
        register = _BYTE_TABLE[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register ^ 0xFFFFFFFF


def crc32c(data):
    """CRC-32C of ``data`` (bytes, bytearray, memoryview), as an int."""
    size = len(data)
    if size < _SHORT:
        return crc32c_bytewise(data)
    pad = -size % CHUNK
    chunks = np.zeros(size + pad, dtype=np.uint8)
    chunks[pad:] = np.frombuffer(data, dtype=np.uint8)
    chunks[pad:pad + 4] ^= 0xFF  # the all-ones initial register, folded into the first message bytes
    chunks = chunks.reshape(-1, CHUNK)
    lanes = np.bitwise_xor.reduce(_FLAT[_CHUNK_GATHER + chunks], axis=1).tolist()
    register = 0
    for lane in lanes:
        register = lane ^ (_SHIFT_TABLES[0][register & 0xFF] ^ _SHIFT_TABLES[1][(register >> 8) & 0xFF]
                           ^ _SHIFT_TABLES[2][(register >> 16) & 0xFF] ^ _SHIFT_TABLES[3][register >> 24])
    return register ^ 0xFFFFFFFF


def masked_crc32c(data):
    """TensorFlow's masked CRC-32C of ``data`` (a CRC stored beside data that may itself hold CRCs)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF

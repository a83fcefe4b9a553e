"""TFRecord datasets read without TensorFlow (``data.tfrecord``, ``crc32c``, ``example_proto``).

Files are written by TensorFlow itself (``tf.io.TFRecordWriter``, ``tf.train.Example``) in the seed's layouts, so the
reader is checked against the real writer, not against itself: the seed's ``prepare_dataset`` images layout
(``image_raw`` + ``label``) and ``data_distiller.py``'s layout (``image_names`` paths, ``image_classes``, raw
``embeddings`` bytes, a first record holding ``classes`` / ``emb_shape`` / ``total`` / ``use_fp16``).
"""

import pickle

import numpy as np
import pytest

from keras_insightface.data.convert import folders_to_rec
from keras_insightface.data.crc32c import crc32c, crc32c_bytewise, masked_crc32c
from keras_insightface.data.decode import decode_image
from keras_insightface.data.example_proto import parse_example
from keras_insightface.data.insightface_rec import InsightfaceRec
from keras_insightface.data.loader import make_loader
from keras_insightface.data.sources import SubsetSource, open_source
from keras_insightface.data.tfrecord import TFRecordSource
from keras_insightface.errors import DataError, DatasetError
from tests.conftest import class_images


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow", reason="TensorFlow (the compat extra) writes the reference TFRecords")


@pytest.fixture
def faces(real_faces):
    """``(jpeg bytes, label)`` of the 10 real crops (one per identity)."""
    folder = real_faces / "small_dataset"
    samples = []
    for line in (folder / "label.txt").read_text().splitlines():
        name, label = line.split("\t")
        samples.append(((folder / name).read_bytes(), int(label)))
    return samples


def _feature(tf, value):
    if isinstance(value, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
    if isinstance(value, float):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return tf.train.Feature(float_list=tf.train.FloatList(value=value.tolist()))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _write(tf, path, records, compression=None):
    """Write dicts of features as ``tf.train.Example`` records with TensorFlow's own writer."""
    with tf.io.TFRecordWriter(str(path), options=compression) as writer:
        for record in records:
            features = {key: _feature(tf, value) for key, value in record.items()}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    return path


def _image_records(samples):
    """The seed's ``*.tfrecord`` images layout (``build_basic_dataset_from_tfrecord``)."""
    return [{"image_raw": data, "label": label} for data, label in samples]


def _record_spans(path):
    """``(offset, payload length)`` of each record, walked from the length fields (test-side, for corrupting)."""
    data, spans, offset = path.read_bytes(), [], 0
    while offset < len(data):
        length = int.from_bytes(data[offset:offset + 8], "little")
        spans.append((offset, length))
        offset += 16 + length
    return spans


def test_crc32c_matches_rfc3720_vectors():
    # iSCSI CRC-32C test vectors, RFC 3720 appendix B.4; and the common check value of "123456789"
    assert crc32c(bytes(32)) == crc32c_bytewise(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C
    assert crc32c(b"123456789") == 0xE3069283
    rng = np.random.default_rng(0)
    for size in (0, 1, 15, 16, 17, 1023, 1024, 1025, 3000, 9000):  # around the byte-loop and chunk boundaries
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert crc32c(data) == crc32c_bytewise(data), size


def test_parse_example_packed_and_unpacked_lists():
    def tag(number, wire):
        return bytes([number << 3 | wire])

    def delimited(number, body):
        return tag(number, 2) + bytes([len(body)]) + body

    def example(name, feature):
        entry = delimited(1, name) + delimited(2, feature)
        return delimited(1, delimited(1, entry))

    unpacked_ints = delimited(3, tag(1, 0) + b"\x05" + tag(1, 0) + b"\xfd" + b"\xff" * 8 + b"\x01")  # 5, -3
    packed_ints = delimited(3, delimited(1, b"\x05\xfd" + b"\xff" * 8 + b"\x01"))
    unpacked_floats = delimited(2, tag(1, 5) + np.float32(1.5).tobytes() + tag(1, 5) + np.float32(-2).tobytes())
    packed_floats = delimited(2, delimited(1, np.array([1.5, -2], "<f4").tobytes()))
    for body in (unpacked_ints, packed_ints):
        feature = parse_example(example(b"n", body))["n"]
        assert feature.kind == "int64_list" and feature.values.tolist() == [5, -3]
    for body in (unpacked_floats, packed_floats):
        feature = parse_example(example(b"f", body))["f"]
        assert feature.kind == "float_list" and feature.values.tolist() == [1.5, -2.0]
    unknown = tag(7, 0) + b"\x01"  # a field Example does not define is skipped
    assert parse_example(unknown + example(b"b", delimited(1, delimited(1, b"xy"))))["b"].values == [b"xy"]
    with pytest.raises(DataError, match="announced"):
        parse_example(example(b"n", packed_ints)[:-3])


def test_image_layout_reads_the_bytes_and_labels_tensorflow_wrote(tf, tmp_path, faces):
    samples = faces + class_images(3, 2, seed=1)
    samples = [(data, label if i < len(faces) else 10 + label) for i, (data, label) in enumerate(samples)]
    path = _write(tf, tmp_path / "train.tfrecord", _image_records(samples))
    source = open_source(path)
    assert isinstance(source, TFRecordSource) and len(source) == 16 and source.num_classes == 13
    assert source.labels.tolist() == [label for _, label in samples] and source.embeddings is None
    for i, (data, label) in enumerate(samples):
        assert source[i] == (data, label)
    assert source.describe(3) == f"{path}: record 3"
    assert decode_image(source[0][0]).shape == (112, 112, 3)
    again = pickle.loads(pickle.dumps(source))  # loader workers get a copy that reopens the file
    assert again[15] == samples[15] and again[-1] == samples[-1]
    images, labels, skipped = next(iter(make_loader(source, batch_size=4, seed=0, num_workers=0).dataset))
    assert images.shape == (4, 112, 112, 3) and np.all(skipped == -1)
    assert set(labels.tolist()) <= {label for _, label in samples}
    folders_to_rec(path, tmp_path / "packed")  # `keras-insightface convert` packs it into the insightface layout
    packed = InsightfaceRec(tmp_path / "packed")
    assert sorted(packed[i] for i in range(len(packed))) == sorted(samples)


@pytest.mark.parametrize("use_fp16", [True, False])
def test_distillation_layout_of_the_seed(tf, tmp_path, faces, use_fp16):
    folder = tmp_path / "faces"
    folder.mkdir()
    names, labels = [], [3, 1, 0, 3, 2]
    for i, label in enumerate(labels):
        (folder / f"{i}.jpg").write_bytes(faces[i][0])
        names.append(f"faces/{i}.jpg".encode())
    dtype = np.float16 if use_fp16 else np.float32
    embeddings = np.random.default_rng(0).normal(size=(5, 6)).astype(dtype)
    records = [{"image_names": name, "image_classes": label, "embeddings": emb.tobytes()}
               for name, label, emb in zip(names, labels, embeddings)]
    records[0].update(classes=6, emb_shape=6, total=5, use_fp16=int(use_fp16))  # data_distiller's first line
    path = _write(tf, tmp_path / "faces_shuffle_label_embs_6.tfrecord", records)
    source = open_source(path)
    assert source.labels.tolist() == labels and source.num_classes == 6  # the header's classes, not max + 1
    assert source.embeddings.dtype == np.float32 and np.array_equal(source.embeddings, embeddings.astype(np.float32))
    assert source[4] == (faces[4][0], 2) and source.describe(1) == str(folder / "1.jpg")
    subset = open_source(path, image_per_class=2)  # only class 3 has two images: embeddings follow the records
    assert isinstance(subset, SubsetSource) and len(subset) == 2
    assert np.array_equal(subset.embeddings, embeddings[[0, 3]].astype(np.float32))


def test_distillation_embeddings_checked_against_the_header(tf, tmp_path, faces):
    (tmp_path / "0.jpg").write_bytes(faces[0][0])
    record = {"image_names": b"0.jpg", "image_classes": 0, "embeddings": np.ones(4, np.float32).tobytes(),
              "classes": 1, "emb_shape": 8, "total": 1, "use_fp16": 0}
    path = _write(tf, tmp_path / "wrong.tfrecord", [record])
    with pytest.raises(DataError, match=r"record 0 \(offset 0\): embedding of 4 float32 values.*emb_shape=8"):
        TFRecordSource(path)
    record.update(emb_shape=4, total=3)
    _write(tf, path, [record])
    with pytest.warns(UserWarning, match="total=3 but the file holds 1 records"):
        assert len(TFRecordSource(path)) == 1


def test_image_names_stay_inside_the_tfrecord_folder(tf, tmp_path, faces):
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(faces[0][0])
    (tmp_path / "data").mkdir()
    path = _write(tf, tmp_path / "data" / "d.tfrecord", [{"image_names": str(outside).encode(), "image_classes": 0}])
    with pytest.raises(DataError, match="points outside"):
        open_source(path)
    assert open_source(path, allow_outside=True)[0] == (faces[0][0], 0)
    _write(tf, path, [{"image_names": b"missing.jpg", "image_classes": 0}])
    with pytest.raises(DataError, match="1 images named by image_names are missing, first: .*missing.jpg"):
        open_source(path)


def test_glob_of_two_files_in_sorted_order(tf, tmp_path):
    samples = class_images(4, 3, seed=2)
    _write(tf, tmp_path / "part-1.tfrecord", _image_records(samples[7:]))  # written first, sorted second
    _write(tf, tmp_path / "part-0.tfrecord", _image_records(samples[:7]))
    pattern = str(tmp_path / "part-*.tfrecord")
    source = open_source(pattern)
    assert source.name == pattern and len(source) == 12 and source.num_classes == 4
    assert [source[i] for i in range(12)] == samples
    assert source.describe(8) == f"{tmp_path / 'part-1.tfrecord'}: record 1"
    with pytest.raises(DataError, match="no TFRecord file matches"):
        open_source(str(tmp_path / "other-*.tfrecord"))


def test_corrupt_payload_byte_names_the_file_and_record(tf, tmp_path):
    path = _write(tf, tmp_path / "c.tfrecord", _image_records(class_images(2, 2)))
    offset, length = _record_spans(path)[2]
    data = bytearray(path.read_bytes())
    data[offset + 12 + length // 2] ^= 0x40  # inside record 2's image bytes
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"c\.tfrecord: record 2 \(offset {offset}\): payload CRC mismatch"):
        open_source(path)
    data[offset + 12 + length // 2] ^= 0x40
    data[offset + 3] ^= 0x01  # the length field of record 2
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"record 2 .*length CRC mismatch, the record is corrupt"):
        open_source(path)


def test_corruption_after_indexing_is_caught_on_read(tf, tmp_path):
    samples = class_images(2, 2)
    path = _write(tf, tmp_path / "c.tfrecord", _image_records(samples))
    source = TFRecordSource(path)
    offset, length = _record_spans(path)[1]
    with open(path, "r+b") as f:
        f.seek(offset + 12 + length - 5)
        f.write(b"\x00")
    assert source[0] == samples[0]
    with pytest.raises(DataError, match=r"record 1 .*payload CRC mismatch"):
        source[1]
    with open(path, "r+b") as f:  # a different file under the same name: the index no longer fits
        f.truncate(offset)
    with pytest.raises(DatasetError, match="record 1 .*changed since it was indexed"):
        source[1]


def test_truncated_file(tf, tmp_path):
    path = _write(tf, tmp_path / "t.tfrecord", _image_records(class_images(2, 2)))
    offset, length = _record_spans(path)[3]
    data = path.read_bytes()
    path.write_bytes(data[:-7])
    with pytest.raises(DataError, match=rf"record 3 \(offset {offset}\): truncated record: it needs {length + 16}"):
        open_source(path)
    path.write_bytes(data[:offset + 5])
    with pytest.raises(DataError, match=r"record 3 .*truncated record header \(5 of 12 bytes"):
        open_source(path)


def test_missing_image_key_names_the_keys_present(tf, tmp_path):
    path = _write(tf, tmp_path / "k.tfrecord", [{"img": b"\xff\xd8\xff", "label": 0, "score": 0.5}])
    with pytest.raises(DataError, match=r"record 0 .*no image feature: expected one of image_raw, image_names; "
                                        r"the record has: img, label, score"):
        open_source(path)
    samples = class_images(2, 1)
    records = _image_records(samples)
    records[1] = {"image_raw": samples[1][0], "class": 1}
    _write(tf, path, records)
    with pytest.raises(DataError, match=r"record 1 .*lacks feature 'label'.*the record has: class, image_raw"):
        open_source(path)


def test_not_a_tfrecord_and_gzip_files_are_named(tf, tmp_path):
    text = tmp_path / "notes.tfrecord"
    text.write_text("image_path\tlabel\n" * 4)
    with pytest.raises(DataError, match="record 0 .*length CRC mismatch, corrupt, or not a TFRecord file"):
        open_source(text)
    gzipped = _write(tf, tmp_path / "z.tfrecord", _image_records(class_images(2, 1)),
                     tf.io.TFRecordOptions(compression_type="GZIP"))
    with pytest.raises(DataError, match="gzip-compressed"):
        open_source(gzipped)
    with pytest.raises(DataError, match="does not exist"):
        open_source(tmp_path / "none.tfrecord")


def test_masked_crc_matches_tensorflows_framing(tf, tmp_path):
    path = _write(tf, tmp_path / "m.tfrecord", [{"label": 7}])
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    assert int.from_bytes(data[8:12], "little") == masked_crc32c(data[:8])
    assert int.from_bytes(data[12 + length:16 + length], "little") == masked_crc32c(data[12:12 + length])


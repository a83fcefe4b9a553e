"""RecordIO without MXNet: headers, multi-part records, the insightface layout and its errors."""

import pickle
import struct

import numpy as np
import pytest
import simplejpeg

from keras_insightface.data import insightface_rec, recordio
from keras_insightface.errors import DataError

MAGIC_BYTES = struct.pack("<I", recordio.MAGIC)


def _jpeg(seed, size=16):
    rng = np.random.default_rng(seed)
    return simplejpeg.encode_jpeg(np.ascontiguousarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))


def _cflags(rec_path):
    """Continuation flags of every part in a .rec file, in file order."""
    data = rec_path.read_bytes()
    flags, pos = [], 0
    while pos < len(data):
        magic, lrec = struct.unpack_from("<II", data, pos)
        assert magic == recordio.MAGIC
        length = lrec & ((1 << 29) - 1)
        flags.append(lrec >> 29)
        pos += 8 + length + (-length % 4)
    return flags


def test_header_round_trip_scalar_and_array():
    flag, label, id_, id2, payload = recordio.unpack(recordio.pack_header(7, id=3, id2=4) + b"jpeg")
    assert (flag, label, id_, id2, payload) == (0, 7.0, 3, 4, b"jpeg")
    flag, label, id_, id2, payload = recordio.unpack(recordio.pack_header([5, 9.5]) + b"xy")
    assert flag == 2 and id_ == 0 and id2 == 0 and payload == b"xy"
    assert label.dtype == np.float32
    np.testing.assert_array_equal(label, [5, 9.5])
    with pytest.raises(DataError):
        recordio.unpack(b"short")


def test_writer_reader_round_trip_with_multipart(tmp_path):
    rng = np.random.default_rng(0)
    payloads = {k: rng.bytes(int(rng.integers(0, 300))) for k in range(20)}
    payloads[20] = b"abcd" + MAGIC_BYTES + b"efgh" + MAGIC_BYTES + MAGIC_BYTES + b"ij"
    payloads[21] = MAGIC_BYTES
    payloads[22] = b"x" + MAGIC_BYTES + b"yyy"
    payloads[23] = b""
    rec, idx = tmp_path / "a.rec", tmp_path / "a.idx"
    with recordio.RecordWriter(rec, idx) as writer:
        for key, payload in payloads.items():
            writer.write(key, payload)
    flags = _cflags(rec)
    assert 1 in flags and 2 in flags and 3 in flags
    reader = recordio.RecordReader(rec, idx)
    assert len(reader) == len(payloads) and reader.keys == list(payloads)
    for key, payload in payloads.items():
        assert reader.read(key) == payload
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.read(20) == payloads[20]
    reader.close()
    clone.close()
    assert recordio.rebuild_index(rec, tmp_path / "b.idx") == str(tmp_path / "b.idx")
    assert (tmp_path / "b.idx").read_text() == idx.read_text()


def _samples(num_classes, per_class, seed=0):
    rng = np.random.default_rng(seed)
    samples = [(_jpeg(int(seed * 1000 + c * 10 + i)), c) for c in range(num_classes) for i in range(per_class)]
    order = rng.permutation(len(samples))
    return [samples[i] for i in order]


def test_insightface_layout_round_trip(tmp_path):
    samples = _samples(num_classes=4, per_class=3)
    insightface_rec.write_insightface_rec(tmp_path, samples, num_classes=4)
    assert insightface_rec.read_property(tmp_path / "property") == (4, 112, 112)
    ds = insightface_rec.InsightfaceRec(tmp_path)
    assert ds.has_header and ds.num_images == len(ds) == 12 and ds.num_classes == 4
    got = sorted(ds[i] for i in range(len(ds)))
    assert got == sorted(samples)
    assert ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.labels, [ds[i][1] for i in range(len(ds))])
    assert ds[-1] == ds[11]
    with pytest.raises(IndexError):
        ds[12]
    header = recordio.unpack(ds.reader.read(0))
    np.testing.assert_array_equal(header[1], [13, 17])
    for c in range(4):
        _, (start, end), _, _, _ = recordio.unpack(ds.reader.read(13 + c))
        assert all(ds[int(k) - 1][1] == c for k in range(int(start), int(end)))
    same = insightface_rec.InsightfaceRec(tmp_path / "train.rec")
    assert same[0] == ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[5] == ds[5]


def test_write_rejects_out_of_range_labels(tmp_path):
    with pytest.raises(DataError, match="label 3"):
        insightface_rec.write_insightface_rec(tmp_path, [(_jpeg(0), 3)], num_classes=3)


def test_rec_without_header_record(tmp_path):
    samples = _samples(num_classes=3, per_class=2, seed=1)
    with recordio.RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        for key, (jpeg, label) in enumerate(samples):
            writer.write(key, recordio.pack_header(label) + jpeg)
    ds = insightface_rec.InsightfaceRec(tmp_path)
    assert not ds.has_header and len(ds) == 6 and ds.num_classes == 3
    assert [ds[i] for i in range(6)] == samples
    np.testing.assert_array_equal(ds.labels, [label for _, label in samples])


def test_label_arrays_and_out_of_range_labels(tmp_path):
    with recordio.RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, recordio.pack_header([1, 0.5]) + _jpeg(0))
        writer.write(1, recordio.pack_header([5, 0.5]) + _jpeg(1))
    insightface_rec.write_property(tmp_path / "property", 2, 112, 112)
    with pytest.raises(DataError, match="train.rec.*label 5"):
        insightface_rec.InsightfaceRec(tmp_path)
    insightface_rec.write_property(tmp_path / "property", 6, 112, 112)  # the class count checked against the labels
    with pytest.raises(DataError, match=r"2 distinct labels but .*property says 6 classes; 4 classes have no image"):
        insightface_rec.InsightfaceRec(tmp_path)
    (tmp_path / "property").unlink()  # no property: a stray label 5 among 1 would make a 6-class head
    with pytest.raises(DataError, match=r"the largest label is 5, so 6 are counted"):
        insightface_rec.InsightfaceRec(tmp_path)
    with recordio.RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, recordio.pack_header([1, 0.5]) + _jpeg(0))
        writer.write(1, recordio.pack_header([0, 0.5]) + _jpeg(1))
    ds = insightface_rec.InsightfaceRec(tmp_path)
    assert ds[0][1] == 1 and ds.labels.tolist() == [1, 0] and ds.num_classes == 2


def test_missing_files_and_corrupt_magic(tmp_path):
    with pytest.raises(DataError, match="train.rec"):
        insightface_rec.InsightfaceRec(tmp_path)
    with pytest.raises(DataError, match="missing.rec"):
        recordio.RecordReader(tmp_path / "missing.rec", tmp_path / "missing.idx")
    insightface_rec.write_insightface_rec(tmp_path, _samples(2, 2), num_classes=2)
    reader = recordio.RecordReader(tmp_path / "train.rec")
    with pytest.raises(DataError, match="key 99"):
        reader.read(99)
    offset = reader.offset(2)
    data = bytearray((tmp_path / "train.rec").read_bytes())
    data[offset : offset + 4] = b"\0\0\0\0"
    (tmp_path / "train.rec").write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"train.rec: key 2 at offset {offset}: bad magic"):
        reader.read(2)
    reader.close()
    with pytest.warns(UserWarning, match="train.idx: .*bad magic"):
        with pytest.raises(DataError, match=rf"train.rec: offset {offset}: bad magic"):
            recordio.RecordReader(tmp_path / "train.rec")
    (tmp_path / "bad.idx").write_text("0\t0\nnot a line\n")
    with pytest.raises(DataError, match="bad.idx: line 2"):
        recordio.RecordReader(tmp_path / "train.rec", tmp_path / "bad.idx")


def _written(tmp_path, num_classes=3, per_class=2):
    samples = _samples(num_classes, per_class)
    insightface_rec.write_insightface_rec(tmp_path, samples, num_classes=num_classes)
    original = insightface_rec.InsightfaceRec(tmp_path)
    return [original[i] for i in range(len(original))], (tmp_path / "train.idx").read_text()


def test_missing_idx_is_rebuilt_and_reads_match(tmp_path):
    images, idx_text = _written(tmp_path)
    (tmp_path / "train.idx").unlink()
    with pytest.warns(UserWarning, match="train.idx: index file missing; rebuilding"):
        ds = insightface_rec.InsightfaceRec(tmp_path)
    assert (tmp_path / "train.idx").read_text() == idx_text
    assert [ds[i] for i in range(len(ds))] == images
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert recordio.rebuild_index(tmp_path / "train.rec", tmp_path / "other.idx") == str(tmp_path / "other.idx")
    assert (tmp_path / "other.idx").read_text() == idx_text


def test_stale_idx_is_detected_and_rebuilt(tmp_path):
    images, idx_text = _written(tmp_path)
    size = (tmp_path / "train.rec").stat().st_size
    (tmp_path / "train.idx").write_text(idx_text.replace("\t0\n", f"\t{size + 64}\n", 1))
    with pytest.warns(UserWarning, match=f"past the end of the {size}-byte record file"):
        ds = insightface_rec.InsightfaceRec(tmp_path)
    assert [ds[i] for i in range(len(ds))] == images
    assert (tmp_path / "train.idx").read_text() == idx_text
    lines = idx_text.splitlines()
    key, offset = lines[2].split("\t")
    (tmp_path / "train.idx").write_text("\n".join(lines[:2] + [f"{key}\t{int(offset) + 4}"] + lines[3:]) + "\n")
    with pytest.warns(UserWarning, match=f"key 2 at offset {int(offset) + 4}: bad magic"):
        recordio.RecordReader(tmp_path / "train.rec")
    assert (tmp_path / "train.idx").read_text() == idx_text
    (tmp_path / "train.idx").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.warns(UserWarning, match="the last record .* ends at byte"):
        recordio.RecordReader(tmp_path / "train.rec")
    assert (tmp_path / "train.idx").read_text() == idx_text


def test_rebuilt_idx_goes_to_the_cache_when_the_folder_is_not_writable(tmp_path, monkeypatch):
    _, idx_text = _written(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    unwritable = tmp_path / "no" / "such" / "folder" / "train.idx"
    with pytest.warns(UserWarning, match="index file missing"):
        reader = recordio.RecordReader(tmp_path / "train.rec", unwritable)
    cached = list((tmp_path / "cache" / "keras_insightface" / "idx").glob("*.idx"))
    assert reader.idx_path == str(cached[0]) and cached[0].read_text() == idx_text
    again = recordio.RecordReader(tmp_path / "train.rec", unwritable)
    assert again.idx_path == reader.idx_path
    assert pickle.loads(pickle.dumps(again)).read(1) == reader.read(1)
    again.close()
    reader.close()


def test_truncated_rec_names_the_offset(tmp_path):
    _written(tmp_path)
    rec = tmp_path / "train.rec"
    reader = recordio.RecordReader(rec)
    last_image = reader.offset(6)
    rec.write_bytes(rec.read_bytes()[: last_image + 20])
    with pytest.raises(DataError, match=rf"train.rec: key 6 at offset {last_image}: truncated record"):
        reader.read(6)
    reader.close()
    with pytest.warns(UserWarning), pytest.raises(DataError, match=rf"train.rec: truncated record at offset {last_image}"):
        insightface_rec.InsightfaceRec(tmp_path)
    (tmp_path / "train.idx").unlink()
    with pytest.raises(DataError, match=rf"train.rec: truncated record at offset {last_image}"):
        recordio.rebuild_index(rec)


def test_float32_header_warning(tmp_path):
    first = (1 << 24) + 2
    with recordio.RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, recordio.pack_header([first, first + 10]))
        writer.write(1, recordio.pack_header(0, id=1) + _jpeg(0))
    with pytest.warns(UserWarning, match=r"train.rec: key 0: .*2\*\*24"):
        with pytest.raises(DataError, match="header says there are 16777217 images but the index holds only 2"):
            insightface_rec.InsightfaceRec(tmp_path)


def test_streamed_samples_and_cheap_pickles(tmp_path):
    samples = sorted(_samples(3, 2), key=lambda sample: -sample[1])
    insightface_rec.write_insightface_rec(tmp_path / "a", iter(samples), num_classes=4, image_size=(16, 8))
    assert insightface_rec.read_property(tmp_path / "a") == (4, 16, 8)
    ds = insightface_rec.InsightfaceRec(tmp_path / "a")
    assert [ds[i] for i in range(len(ds))] == samples and ds.num_classes == 4
    _, (start, end), _, _, _ = recordio.unpack(ds.reader.read(7 + 3))
    assert start == end
    assert len(pickle.dumps(ds)) < 1000
    with pytest.raises(DataError, match="sample 2 has label 0 again after other labels"):
        insightface_rec.write_insightface_rec(tmp_path / "b", iter([(b"x", 0), (b"y", 1), (b"z", 0)]), num_classes=2)
    with pytest.raises(DataError, match="sample 1 has label 5, expected 0..1"):
        insightface_rec.write_insightface_rec(tmp_path / "b", iter([(b"x", 0), (b"y", 5)]), num_classes=2)


def test_property_errors(tmp_path):
    (tmp_path / "property").write_text("10,112\n")
    with pytest.raises(DataError, match="property"):
        insightface_rec.read_property(tmp_path)
    with pytest.raises(DataError, match="property file missing"):
        insightface_rec.read_property(tmp_path / "sub")


def test_labels_from_split_headers_and_long_label_arrays(tmp_path):
    jpegs = [_jpeg(i) for i in range(3)]
    with recordio.RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as writer:
        writer.write(0, recordio.pack_header(1, id=recordio.MAGIC) + jpegs[0])
        writer.write(1, recordio.pack_header([0] + [0.25] * 80) + jpegs[1])
        writer.write(2, recordio.pack_header([2] + [0.25] * 80, id2=recordio.MAGIC) + jpegs[2])
    assert 1 in _cflags(tmp_path / "train.rec")
    ds = insightface_rec.InsightfaceRec(tmp_path)
    assert ds.labels.tolist() == [1, 0, 2] and ds.num_classes == 3
    assert [ds[i] for i in range(3)] == list(zip(jpegs, [1, 0, 2]))

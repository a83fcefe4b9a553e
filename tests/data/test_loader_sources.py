"""Sources (rec / class folders / list files) and the grain loader: shuffling, batching, workers, errors."""

import numpy as np
import pytest

from keras_insightface.data.loader import make_loader
from keras_insightface.data.recordio import write_insightface_rec
from keras_insightface.data.sources import folder_source, list_source, open_source
from keras_insightface.errors import DataError
from tests.conftest import class_images, jpeg


class LabelledSource:
    """Image i is filled with value i % 256 and labelled i, so batches can be traced back to indices."""

    name = "toy"

    def __init__(self, n):
        self.n, self.num_classes = n, n
        self.images = [jpeg(np.full((112, 112, 3), i % 256)) for i in range(n)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.images[i], i


def _take(loader, count):
    iterator = iter(loader.dataset)
    try:
        return [next(iterator) for _ in range(count)]
    finally:
        if hasattr(iterator, "close"):
            iterator.close()


def test_epochs_cover_all_samples_and_reshuffle():
    loader = make_loader(LabelledSource(10), batch_size=3, seed=5, num_workers=0)
    assert loader.steps_per_epoch == 3
    batches = _take(loader, 6)
    images, labels = batches[0]
    assert images.shape == (3, 112, 112, 3) and images.dtype == np.uint8 and labels.dtype == np.int32
    assert np.all(images[:, 50, 50, 0] == labels)  # image content matches its label
    epoch1 = np.concatenate([b[1] for b in batches[:3]])
    epoch2 = np.concatenate([b[1] for b in batches[3:]])
    assert len(set(epoch1)) == 9 and len(set(epoch2)) == 9  # each epoch: 9 distinct samples, remainder dropped
    assert not np.array_equal(epoch1, epoch2)
    again = np.concatenate([b[1] for b in _take(make_loader(LabelledSource(10), 3, seed=5, num_workers=0), 3)])
    assert np.array_equal(epoch1, again)  # same seed, same order


def test_worker_processes_decode_the_same_batches():
    in_process = _take(make_loader(LabelledSource(12), 4, seed=1, num_workers=0), 4)
    with_workers = _take(make_loader(LabelledSource(12), 4, seed=1, num_workers=1), 4)
    for (a_img, a_lab), (b_img, b_lab) in zip(in_process, with_workers):
        assert np.array_equal(a_lab, b_lab) and np.array_equal(a_img, b_img)


def test_dataset_smaller_than_one_batch():
    with pytest.raises(DataError, match="toy: 5 images .* fewer than one batch of 8"):
        make_loader(LabelledSource(5), batch_size=8)


def test_corrupt_or_missized_first_image_fails_before_training():
    source = LabelledSource(8)
    source.images[0] = source.images[0][:50]
    with pytest.raises(DataError, match="toy record 0: cannot decode image"):
        make_loader(source, batch_size=2, num_workers=0)
    source.images[0] = jpeg(np.zeros((100, 90, 3)))
    with pytest.raises(DataError, match="toy record 0: image is 90x100, expected aligned 112x112"):
        make_loader(source, batch_size=2, num_workers=0)


def test_corrupt_image_later_names_the_record():
    source = LabelledSource(8)
    source.images[5] = b"\xff\xd8 not a jpeg"
    loader = make_loader(source, batch_size=8, num_workers=0)
    with pytest.raises(DataError, match="toy record 5: cannot decode image"):
        _take(loader, 1)


def test_open_source_dispatch(tmp_path):
    write_insightface_rec(tmp_path / "rec", class_images(3, 2, size=16), 3)
    rec = open_source(tmp_path / "rec")
    assert len(rec) == 6 and rec.num_classes == 3
    folders = tmp_path / "folders"
    for label in (10, 2, 1):
        (folders / str(label)).mkdir(parents=True)
        (folders / str(label) / "a.jpg").write_bytes(jpeg(np.full((8, 8, 3), label)))
    source = open_source(folders)
    assert source.labels.tolist() == [0, 1, 2] and source.paths[2].endswith("10/a.jpg")  # numeric class order
    assert source.num_classes == 3


def test_real_list_file(real_faces):
    source = list_source(real_faces / "small_dataset" / "label.txt")
    assert len(source) == 10 and source.num_classes == 10
    loader = make_loader(source, batch_size=4, num_workers=0)
    images, labels = _take(loader, 1)[0]
    assert images.shape == (4, 112, 112, 3) and images.std() > 10


def test_bad_inputs_name_the_path(tmp_path):
    with pytest.raises(DataError, match="nothing: dataset path does not exist"):
        open_source(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no class subfolders"):
        open_source(empty)
    (empty / "a").mkdir()
    with pytest.raises(DataError, match="empty: 1 class subfolders but no images"):
        open_source(empty)
    listing = tmp_path / "l.txt"
    listing.write_text("x.jpg\tone\n")
    with pytest.raises(DataError, match="l.txt:1: expected 'image_path<TAB>label'"):
        open_source(listing)
    listing.write_text("x.jpg\t0\n")
    with pytest.raises(DataError, match="l.txt: 1 listed images are missing, first: .*x.jpg"):
        open_source(listing)


def test_rec_without_idx(tmp_path):
    write_insightface_rec(tmp_path, class_images(2, 2, size=16), 2)
    (tmp_path / "train.idx").unlink()
    with pytest.raises(DataError, match="train.idx: index file missing"):
        open_source(tmp_path)


def test_folder_source_ignores_non_images(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "notes.txt").write_text("x")
    (tmp_path / "0" / "a.png").write_bytes(b"")
    assert len(folder_source(tmp_path)) == 1

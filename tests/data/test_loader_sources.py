"""Sources (rec / class folders / list files) and the grain loader: shuffling, batching, workers, errors."""

import numpy as np
import pytest

from keras_insightface.data.loader import make_loader
from keras_insightface.data.insightface_rec import write_insightface_rec
from keras_insightface.data.sources import folder_source, list_source, open_source
from keras_insightface.errors import DataError
from tests.conftest import class_images, jpeg


class LabelledSource:
    """Image i is filled with value i % 256 and labelled i // per_class, so batches can be traced back."""

    name = "toy"

    def __init__(self, n, per_class=1):
        self.n, self.per_class = n, per_class
        self.labels = np.arange(n) // per_class
        self.num_classes = int(self.labels.max()) + 1
        self.images = [jpeg(np.full((112, 112, 3), i % 256)) for i in range(n)]

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])


def _take(loader, count, state=None):
    iterator = iter(loader.dataset)
    try:
        if state is not None:
            iterator.set_state(state)
        return [next(iterator) for _ in range(count)]
    finally:
        if hasattr(iterator, "close"):
            iterator.close()


def _indices(batch):
    """The source index of every image of a batch (images are filled with their index)."""
    return batch[0][:, 50, 50, 0].astype(int)


def test_epochs_cover_all_samples_and_reshuffle():
    loader = make_loader(LabelledSource(10), batch_size=3, seed=5, num_workers=0)
    assert loader.steps_per_epoch == 3
    batches = _take(loader, 6)
    images, labels, skipped = batches[0]
    assert images.shape == (3, 112, 112, 3) and images.dtype == np.uint8 and labels.dtype == np.int32
    assert np.all(_indices(batches[0]) == labels) and np.all(skipped == -1)
    epoch1 = np.concatenate([b[1] for b in batches[:3]])
    epoch2 = np.concatenate([b[1] for b in batches[3:]])
    assert len(set(epoch1)) == 9 and len(set(epoch2)) == 9  # each epoch: 9 distinct samples, remainder dropped
    assert not np.array_equal(epoch1, epoch2)
    again = np.concatenate([b[1] for b in _take(make_loader(LabelledSource(10), 3, seed=5, num_workers=0), 3)])
    assert np.array_equal(epoch1, again)  # same seed, same order


def test_worker_processes_decode_the_same_batches_and_restore_state():
    in_process = _take(make_loader(LabelledSource(12), 4, seed=1, num_workers=0), 5)
    loader = make_loader(LabelledSource(12), 4, seed=1, num_workers=1)
    iterator = iter(loader.dataset)
    try:
        with_workers = [next(iterator) for _ in range(2)]
        state = iterator.get_state()
        with_workers += [next(iterator) for _ in range(3)]
    finally:
        iterator.close()
    for a, b in zip(in_process, with_workers):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
    resumed = _take(loader, 3, state)  # a fresh worker iterator continues exactly after batch 2
    for a, b in zip(with_workers[2:], resumed):
        assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_hosts_get_disjoint_shards():
    shards = [make_loader(LabelledSource(20), 3, seed=2, num_workers=0, process_index=h, process_count=2) for h in (0, 1)]
    assert [s.steps_per_epoch for s in shards] == [3, 3]
    seen = [set(np.concatenate([b[1] for b in _take(s, 3)])) for s in shards]
    assert not seen[0] & seen[1] and len(seen[0]) == len(seen[1]) == 9


def test_identity_group_batches():
    source = LabelledSource(40, per_class=5)  # 8 identities x 5 images
    loader = make_loader(source, batch_size=7, seed=3, num_workers=0, image_per_class=2)
    assert loader.batch_size == 6 and loader.steps_per_epoch == 16 // 3  # 8 x 2 groups, 3 groups per batch
    batches = _take(loader, 2 * loader.steps_per_epoch)
    for images, labels, _ in batches:
        groups = labels.reshape(-1, 2)
        assert np.all(groups[:, 0] == groups[:, 1])  # each pair of images shares an identity
        assert len(set(_indices((images,)))) == 6  # no image twice in a batch
    epoch1 = np.concatenate([_indices(b) for b in batches[: loader.steps_per_epoch]])
    epoch2 = np.concatenate([_indices(b) for b in batches[loader.steps_per_epoch :]])
    assert len(set(epoch1)) == len(epoch1) and not np.array_equal(epoch1, epoch2)
    with pytest.raises(DataError, match="batch_size 1 is smaller than image_per_class 2"):
        make_loader(source, batch_size=1, image_per_class=2)


def test_dataset_smaller_than_one_batch():
    with pytest.raises(DataError, match="toy: 5 images .* fewer than one batch of 8"):
        make_loader(LabelledSource(5), batch_size=8)


def test_unreadable_first_images_fail_before_training():
    source = LabelledSource(8)
    source.images = [image[:50] for image in source.images]
    with pytest.raises(DataError, match="toy record 0: cannot decode image"):
        make_loader(source, batch_size=2, num_workers=0)
    source.images = [jpeg(np.zeros((100, 90, 3)))] * 8
    with pytest.raises(DataError, match="toy record 0: image is 90x100, expected aligned 112x112"):
        make_loader(source, batch_size=2, num_workers=0)


def test_corrupt_image_is_skipped_and_reported_or_strict_error():
    source = LabelledSource(8)
    source.images[5] = b"\xff\xd8 not a jpeg"
    batches = _take(make_loader(source, batch_size=8, num_workers=0), 2)
    for _, labels, skipped in batches:  # record 5 is replaced by record 6 and reported, in every epoch
        assert skipped.tolist().count(5) == 1 and np.all(skipped[skipped != 5] == -1)
        assert 5 not in labels.tolist() and labels.tolist().count(6) == 2
    with pytest.raises(DataError, match="toy record 5: cannot decode image"):
        _take(make_loader(source, batch_size=8, num_workers=0, strict=True), 1)
    # with_records: which record each image came from (teacher embeddings follow it), the replacement's for 5
    for _, labels, skipped, records in _take(make_loader(source, batch_size=8, num_workers=0, with_records=True), 2):
        assert records.tolist() == labels.tolist()  # LabelledSource: label i for record i
        assert sorted(records.tolist()) == [0, 1, 2, 3, 4, 6, 6, 7]


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
    images, labels, skipped = _take(loader, 1)[0]
    assert images.shape == (4, 112, 112, 3) and images.std() > 10 and np.all(skipped == -1)


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


def test_rec_without_idx_is_reindexed(tmp_path):
    samples = class_images(2, 2, size=16)
    write_insightface_rec(tmp_path, samples, 2)
    (tmp_path / "train.idx").unlink()
    with pytest.warns(UserWarning, match="train.idx: index file missing; rebuilding"):
        source = open_source(tmp_path)
    assert [source[i] for i in range(len(source))] == sorted(samples, key=lambda s: s[1])


def test_folder_source_reports_non_images(tmp_path):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "notes.txt").write_text("x")
    (tmp_path / "0" / "a.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="1 files in class folders are not images .*first: 0/notes.txt; they are left out"):
        assert len(folder_source(tmp_path)) == 1
    with pytest.raises(DataError, match="1 files in class folders are not images"):
        open_source(tmp_path, strict=True)  # the cached scan remembers them too


def _class_tree(root, counts):
    for label, count in enumerate(counts):
        (root / str(label)).mkdir(parents=True)
        for i in range(count):
            (root / str(label) / f"{i}.jpg").write_bytes(jpeg(np.full((8, 8, 3), label * 10 + i)))


def test_folder_scan_cache_is_used_and_invalidated(tmp_path):
    _class_tree(tmp_path, [2, 3])
    first = folder_source(tmp_path)
    assert (tmp_path / ".keras_insightface_scan.npz").is_file() and len(first) == 5
    (tmp_path / "0" / "2.jpg").write_bytes(jpeg(np.zeros((8, 8, 3))))  # a file added to a class
    assert len(folder_source(tmp_path)) == 6
    (tmp_path / "2").mkdir()  # a class added
    (tmp_path / "2" / "a.jpg").write_bytes(jpeg(np.zeros((8, 8, 3))))
    third = folder_source(tmp_path)
    assert len(third) == 7 and third.num_classes == 3
    with np.load(tmp_path / ".keras_insightface_scan.npz") as cached:  # the cache holds the latest scan
        assert len(cached["files"]) == 7


def test_unwritable_tree_caches_in_user_dir(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    _class_tree(tree, [1, 1])
    (tree / ".keras_insightface_scan.npz").mkdir()  # the cache cannot be written beside the tree
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert len(folder_source(tree)) == 2
    cached = list((tmp_path / "cache" / "keras_insightface" / "scans").glob("*.npz"))
    assert len(cached) == 1
    assert len(folder_source(tree)) == 2 and list(tree.glob("*.tmp*")) == []


def test_image_per_class_filter_renumbers(tmp_path):
    _class_tree(tmp_path, [3, 1, 4, 2])
    source = open_source(tmp_path, image_per_class=3)
    assert source.num_classes == 2 and len(source) == 7
    assert source.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert source.describe(3).endswith("2/0.jpg") and source[3][1] == 1
    with pytest.raises(DataError, match="no identity has 5 or more images"):
        open_source(tmp_path, image_per_class=5)


def test_npz_list_with_embeddings(tmp_path):
    _class_tree(tmp_path / "imgs", [2, 2])
    names = ["imgs/0/0.jpg", "imgs/0/1.jpg", "imgs/1/0.jpg", "imgs/1/1.jpg"]
    np.savez(tmp_path / "list.npz", image_names=names, image_classes=[0, 0, 1, 1], embeddings=np.eye(4, 3))
    source = open_source(tmp_path / "list.npz")
    assert len(source) == 4 and source.num_classes == 2 and source.embeddings.shape == (4, 3)
    assert source[2][0] == (tmp_path / "imgs/1/0.jpg").read_bytes()
    np.savez(tmp_path / "bad.npz", image_names=names)
    with pytest.raises(DataError, match="bad.npz: npz list lacks image_classes"):
        open_source(tmp_path / "bad.npz")
    np.savez(tmp_path / "short.npz", image_names=names, image_classes=[0, 1])
    with pytest.raises(DataError, match="short.npz: image_names, image_classes"):
        open_source(tmp_path / "short.npz")


def test_jpeg_recompression_in_workers_is_seeded_per_batch():
    rng = np.random.default_rng(0)
    source = LabelledSource(8)
    source.images = [jpeg(rng.integers(0, 256, (112, 112, 3)), quality=95) for _ in range(8)]
    plain = _take(make_loader(source, 8, seed=1, num_workers=0), 2)
    squeezed = _take(make_loader(source, 8, seed=1, num_workers=0, jpeg_quality_level=2), 2)
    again = _take(make_loader(source, 8, seed=1, num_workers=0, jpeg_quality_level=2), 2)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(squeezed, again))  # reproducible from the seed
    for p, q in zip(plain, squeezed):
        assert np.array_equal(p[1], q[1]) and not np.array_equal(p[0], q[0])  # same samples, re-compressed
        assert np.abs(p[0].astype(int) - q[0].astype(int)).mean() > 5  # noise images lose a lot at quality ~80

"""The keras-insightface command: a tiny training run through the CLI, and one-line errors for bad input."""

import pickle

import pytest

from keras_insightface.cli import main
from keras_insightface.cli.train import results_table
from keras_insightface.data.binpack import write_bin
from keras_insightface.data.insightface_rec import write_insightface_rec
from tests.conftest import class_images


def _error_line(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]  # progress lines (e.g. re-indexing) may come before the one-line error
    assert last.startswith("keras-insightface ") and ": error: " in last
    return last


def test_missing_empty_and_truncated_datasets(tmp_path, capsys):
    assert _error_line(capsys, ["train", "--data", str(tmp_path / "none")]).endswith("none: dataset path does not exist")
    assert "no class subfolders" in _error_line(capsys, ["train", "--data", str(tmp_path)])
    write_insightface_rec(tmp_path / "rec", class_images(2, 2, size=16), 2)
    rec = tmp_path / "rec" / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-30])
    with pytest.warns(UserWarning, match="rebuilding the index"):
        assert "train.rec" in _error_line(capsys, ["train", "--data", str(tmp_path / "rec")])


def test_corrupt_jpeg_is_named(tmp_path, capsys):
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    err = _error_line(capsys, ["train", "--data", str(tmp_path), "--batch-size", "1"])
    assert "1 class; face recognition training needs at least 2 identities" in err
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "fine.jpg").write_bytes(class_images(1, 1)[0][0])
    err = _error_line(capsys, ["train", "--data", str(tmp_path), "--batch-size", "1", "--strict-data", "true"])
    assert "0/broken.jpg: cannot decode image" in err


def test_bin_with_forbidden_pickle_and_missing_model(tmp_path, capsys):
    write_insightface_rec(tmp_path / "rec", class_images(2, 4), 2)
    bad = tmp_path / "evil.bin"
    bad.write_bytes(pickle.dumps((pickle.loads, [True])))
    argv = ["train", "--data", str(tmp_path / "rec"), "--eval", str(bad), "--model", "r18_tiny", "--batch-size", "4"]
    assert "evil.bin: refusing to unpickle" in _error_line(capsys, argv)
    model = tmp_path / "m.keras"
    assert "m.keras: model file does not exist" in _error_line(capsys, ["eval", "-m", str(model), "--eval", str(bad)])


def test_train_command_end_to_end(tmp_path, capsys):
    write_insightface_rec(tmp_path / "rec", class_images(6, 6), 6)
    pairs = class_images(6, 2, seed=3)  # images 2c and 2c+1 are class c
    index_pairs = [(2 * c, 2 * c + 1) for c in range(6)] + [(2 * c, (2 * c + 2) % 12) for c in range(6)]
    write_bin(tmp_path / "val.bin", [pairs[i][0] for pair in index_pairs for i in pair], [True] * 6 + [False] * 6)
    argv = ["train", "--data", str(tmp_path / "rec"), "--eval", str(tmp_path / "val.bin"), "--model", "r18_tiny",
            "--emb-shape", "16", "--batch-size", "12", "--scales", "16,32", "--epochs", "1,1", "--num-workers", "0",
            "--save-path", "cli.keras", "--checkpoint-dir", str(tmp_path / "out")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| epoch | stage | lr | loss | accuracy | val | val thresh | val 10-fold |" in out
    assert (tmp_path / "out" / "cli_hist.json").is_file()
    assert (tmp_path / "out" / "cli.png").stat().st_size > 10_000
    best = list((tmp_path / "out").glob("cli_basic_val_epoch_*.keras"))
    assert len(best) == 1
    assert main(["eval", "-m", str(best[0]), "-e", str(tmp_path / "val.bin")]) == 0
    assert "| val | " in capsys.readouterr().out


def test_results_table_rows():
    history = {"lr": [0.1, 4e-6], "loss": [2.0, 1.0], "accuracy": [0.5, 0.9], "lfw": [0.8, 0.9],
               "lfw_thresh": [0.3, 0.4], "lfw_kfold": [0.79, 0.88], "lfw_kfold_std": [0.01, 0.02]}
    lines = results_table(history, ["lfw"], [1, 1]).splitlines()
    assert lines[2] == "| 1 | 1 | 1.00e-01 | 2.0000 | 0.5000 | 0.8000 | 0.3000 | 0.7900 ± 0.0100 |"
    assert lines[3].startswith("| 2 | 2 | 4.00e-06 |")  # a small rate is not "0.00000"


def test_convert_commands(tmp_path, capsys):
    folders = tmp_path / "folders"
    for label in range(4):
        (folders / str(label)).mkdir(parents=True)
        for i, (image, _) in enumerate(class_images(1, 3, seed=label)):
            (folders / str(label) / f"{i}.jpg").write_bytes(image)
    assert main(["convert", "folders2rec", str(folders), str(tmp_path / "rec")]) == 0
    assert main(["convert", "rec2folders", str(tmp_path / "rec"), str(tmp_path / "back")]) == 0
    for label in range(4):
        original = sorted(p.read_bytes() for p in (folders / str(label)).iterdir())
        assert sorted(p.read_bytes() for p in (tmp_path / "back" / str(label)).iterdir()) == original
    assert main(["convert", "make-bin", str(tmp_path / "rec"), str(tmp_path / "pairs.bin"), "--pairs", "10"]) == 0
    assert "make-bin" in capsys.readouterr().out
    assert (tmp_path / "pairs.bin").stat().st_size > 0
    assert "pairs.bin" in _error_line(capsys, ["convert", "folders2rec", str(tmp_path / "pairs.bin"), str(tmp_path / "x")])


def test_models_table(capsys):
    assert main(["models", "r18_tiny", "mobilenet", "--emb-shape", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| model | parameters (M) | GFLOPs at 112x112")
    rows = {line.split("|")[1].strip(): line.split("|")[2:4] for line in lines[2:]}
    assert set(rows) == {"r18_tiny", "mobilenet"}
    assert float(rows["mobilenet"][0]) > float(rows["r18_tiny"][0]) > 0 and float(rows["mobilenet"][1]) > 0
    assert "Unknown backbone" in _error_line(capsys, ["models", "nonet"])


def test_search_and_summary_commands(tmp_path, capsys):
    import keras
    import numpy as np

    from tests.conftest import jpeg

    inputs = keras.Input((112, 112, 3))
    embedding = keras.layers.Flatten(name="embedding")(keras.layers.AveragePooling2D(28)(inputs - 127.5))
    model_path = tmp_path / "basic.keras"
    keras.Model(inputs, embedding).save(model_path)
    rng = np.random.default_rng(0)
    patterns = {name: rng.integers(0, 256, (4, 4, 3)) for name in ("ann", "bob", "cid")}
    for name, pattern in patterns.items():
        (tmp_path / "gallery" / name).mkdir(parents=True)
        for i in range(2):
            face = np.clip(pattern.repeat(28, 0).repeat(28, 1) + rng.normal(0, 10, (112, 112, 3)), 0, 255)
            (tmp_path / "gallery" / name / f"{i}.jpg").write_bytes(jpeg(face))
    query = tmp_path / "query.jpg"
    query.write_bytes(jpeg(patterns["bob"].repeat(28, 0).repeat(28, 1)))
    argv = ["search", str(query), "--gallery", str(tmp_path / "gallery"), "-m", str(model_path), "-k", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "3 identities, 6 images (6 embedded now, 0 from the cache" in printed
    assert "| 1 | bob |" in printed and printed.count("\n| ") == 3  # header and 2 ranks
    assert main(argv) == 0
    assert "(0 embedded now, 6 from the cache" in capsys.readouterr().out

    assert main(["summary", "-m", str(model_path), "--runs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "parameters     0 (0 trainable)" in printed and "48-d, output layer 'embedding'" in printed

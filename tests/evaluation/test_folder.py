"""Folder evaluation: top-1 against leave-one-out class centers, TPR at FPR and AUC, on arrays and on folders."""

import numpy as np
import pytest

from keras_insightface.cli import main
from keras_insightface.errors import DataError
from keras_insightface.evaluation.folder import eval_folder, evaluate_embeddings
from tests.conftest import jpeg

E = np.eye(4)
# Class 0: two e0; class 1: e1 and (0, .8, .6, 0); class 2: two e2 and a mislabelled e0.
EMB = np.stack([E[0], E[0], E[1], [0, 0.8, 0.6, 0], E[2], E[2], E[0]])
LABELS = [0, 0, 1, 1, 2, 2, 2]
# Genuine (vs own center without the image): 1, 1, .8, .8, .7071, .7071, 0 (the mislabelled e0 vs e2).
# Impostors (vs other full centers; center 1 = (0, .9487, .3162, 0), center 2 = (.4472, 0, .8944, 0)):
# 1.0 (mislabelled e0 vs center 0), .5367, .4472 x2, .3162 x2 and eight 0.
GENUINE = [1, 1, 0.8, 0.8, 0.7071, 0.7071, 0]
IMPOSTOR = [1, 0.5367, 0.4472, 0.4472, 0.3162, 0.3162] + [0] * 8


def test_known_top1_tpr_and_auc():
    result = evaluate_embeddings(EMB, LABELS, fprs=[1e-6, 1 / 14], chunk_size=3)
    assert (result["images"], result["classes"], result["trials"]) == (7, 3, 7)
    assert result["top1"] == pytest.approx(6 / 7)  # only the mislabelled image misses
    # FPR 0: above the 1.0 impostor nothing; FPR 1/14: above .5367 all but the mislabelled image.
    assert result["tpr"] == {1e-6: 0.0, 1 / 14: pytest.approx(6 / 7)}
    pairs = [(g > i) + 0.5 * (abs(g - i) < 1e-3) for g in GENUINE for i in IMPOSTOR]
    assert sum(pairs) == 83
    assert result["auc"] == pytest.approx(83 / 98)
    assert evaluate_embeddings(EMB * 3, LABELS, fprs=[1e-6, 1 / 14], chunk_size=100) == result  # scale, chunks


def test_singleton_classes_are_impostors_only_and_bad_input():
    one_more = evaluate_embeddings(np.vstack([EMB, E[3]]), [*LABELS, 3])
    assert (one_more["classes"], one_more["trials"]) == (4, 7)
    with pytest.raises(DataError, match="faces: needs at least 2 classes"):
        evaluate_embeddings(EMB, [0] * 7, name="faces")
    with pytest.raises(DataError, match="single image"):
        evaluate_embeddings(E, [0, 1, 2, 3])
    with pytest.raises(DataError, match=r"\(N, D\) embeddings and N labels"):
        evaluate_embeddings(EMB, LABELS[:-1])


def _colour_folders(root):
    """Solid-colour class folders: red, green, blue at three brightnesses; folder ``a`` holds a blue image too."""
    colours = {"a": [(160, 0, 0), (200, 0, 0), (0, 0, 200)], "b": [(0, v, 0) for v in (160, 200, 240)]}
    colours["c"] = [(0, 0, v) for v in (160, 200, 240)]
    for name, values in colours.items():
        (root / name).mkdir(parents=True)
        for index, colour in enumerate(values):
            (root / name / f"{index}.jpg").write_bytes(jpeg(np.full((112, 112, 3), colour, np.uint8)))
    return root


def mean_colour(images):
    """Mean colour per channel, rounded to multiples of 16 so JPEG noise leaves pure colours pure."""
    return np.round(np.asarray(images, np.float32).mean(axis=(1, 2)) / 16) * 16


def test_eval_folder_end_to_end(tmp_path):
    result = eval_folder(_colour_folders(tmp_path / "faces"), mean_colour, batch_size=4, num_workers=0,
                         fprs=[0.05, 0.2], chunk_size=4)
    assert (result["images"], result["classes"], result["trials"]) == (9, 3, 9)
    assert result["top1"] == pytest.approx(8 / 9)  # the blue image in folder a matches blue
    # Genuine: red .7071 x2 (own center without it: red + blue), blue-in-a 0, six 1.0. Impostors: 1.0 (blue-in-a
    # vs blue), .4472 x3 (blue vs folder a's center), fourteen 0. FPR .05 and .2 accept 1 and 4 impostors.
    assert result["tpr"] == {0.05: pytest.approx(8 / 9), 0.2: pytest.approx(8 / 9)}
    assert result["auc"] == pytest.approx((2 * 17 + 7 + 6 * 17.5) / (9 * 18))


def test_cli_eval_folder(tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((112, 112, 3)), keras.layers.GlobalAveragePooling2D()])
    model.save(tmp_path / "mean.keras")
    data = _colour_folders(tmp_path / "faces")
    (data / "a" / "2.jpg").unlink()
    argv = ["eval-folder", "-m", str(tmp_path / "mean.keras"), str(data), "--fprs", "1e-3,1e-1", "--num-workers", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| model | top1 | TPR@FPR=1e-03 | TPR@FPR=1e-01 | AUC |" in out
    assert "| mean | 1.0000 | 1.0000 | 1.0000 | 1.0000 |" in out
    assert main(["eval-folder", "-m", str(tmp_path / "mean.keras"), str(tmp_path / "missing")]) == 2
    assert "missing: dataset path does not exist" in capsys.readouterr().err

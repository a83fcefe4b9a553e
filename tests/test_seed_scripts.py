"""The seed README's training, evaluation and plotting examples run as a plain script (no ``__main__`` guard, as seed
users write them) with only their import lines changed.

The script below is the seed README's "Basic Training" example, its "Restore training from break point" example
(continuing the full model the first run saved), its "Evaluation" example and a ``plot.hist_plot_split`` call, as written there except for: the import lines (``import losses, train, models`` ->
``from keras_insightface import losses, train, models``; ``from tensorflow import keras`` -> ``import keras``;
``import tensorflow_addons as tfa`` -> ``from keras_insightface import training as tfa``, whose ``optimizers``
module has ``SGDW``), the dataset paths, ``batch_size`` 512 -> 16, ``epoch`` 5/5/40 -> 1/1/1 (restored: 35 -> 1 from epoch 15 -> 2),
``weights=None`` (no ImageNet download here), and the evaluated file name (the seed's was a name from its own run).
"""

import json
import subprocess
import sys
from pathlib import Path

from keras_insightface.data.binpack import write_bin
from keras_insightface.data.insightface_rec import write_insightface_rec
from tests.conftest import class_images

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = '''
import keras
from keras_insightface import losses, train, models
from keras_insightface import training as tfa

# basic_model = models.buildin_models("ResNet101V2", dropout=0.4, emb_shape=512, output_layer="E")
basic_model = models.buildin_models("MobileNet", dropout=0, emb_shape=256, output_layer="GDC", weights=None)
data_path = "{data}"
eval_paths = ["{bin}"]

tt = train.Train(data_path, save_path='keras_mobilenet_emore.h5', eval_paths=eval_paths,
                basic_model=basic_model, batch_size=16, random_status=0,
                lr_base=0.1, lr_decay=0.5, lr_decay_steps=16, lr_min=1e-5)
optimizer = tfa.optimizers.SGDW(learning_rate=0.1, momentum=0.9, weight_decay=5e-5)
sch = [
  {{"loss": losses.ArcfaceLoss(scale=16), "epoch": 1, "optimizer": optimizer}},
  {{"loss": losses.ArcfaceLoss(scale=32), "epoch": 1}},
  {{"loss": losses.ArcfaceLoss(scale=64), "epoch": 1}},
  # {{"loss": losses.ArcfaceLoss(), "epoch": 20, "triplet": 64, "alpha": 0.35}},
]
tt.train(sch, 0)

# "Restore training from break point": the full model the run saved as checkpoints/<save_path>
tt = train.Train(data_path, 'keras_mobilenet_emore.h5', eval_paths, model='./checkpoints/keras_mobilenet_emore.h5',
                batch_size=16, random_status=0, lr_base=0.1, lr_decay=0.5, lr_decay_steps=16, lr_min=1e-5)
sch = [
  # {{"loss": losses.ArcfaceLoss(scale=16), "epoch": 5, "optimizer": optimizer}},
  # {{"loss": losses.ArcfaceLoss(scale=32), "epoch": 5}},
  {{"loss": losses.ArcfaceLoss(scale=64), "epoch": 1}},
]
tt.train(sch, initial_epoch=2)

import glob
from keras_insightface import evals
basic_model = keras.models.load_model(glob.glob('checkpoints/keras_mobilenet_emore_basic_*.keras')[0], compile=False)
ee = evals.eval_callback(basic_model, "{bin}")
ee.on_epoch_end(0)

from keras_insightface import plot
axes, _ = plot.hist_plot_split("checkpoints/keras_mobilenet_emore_hist.json", [1, 1, 1],
                               names=["Arcface scale 16", "Arcface scale 32", "Arcface scale 64"])
axes[0].figure.savefig("hist.png")
print("SEED SCRIPT DONE", len(tt.my_history.history["loss"]) if hasattr(tt, "my_history") else "")
'''


def test_seed_readme_examples_run_as_a_plain_script(tmp_path):
    samples = class_images(8, 6, seed=0)
    write_insightface_rec(tmp_path / "rec", samples, 8)
    pairs = class_images(8, 2, seed=1)
    images, issame = [], []
    for i in range(8):
        images += [pairs[2 * i][0], pairs[2 * i + 1][0], pairs[2 * i][0], pairs[(2 * i + 2) % 16][0]]
        issame += [True, False]
    write_bin(tmp_path / "val.bin", images, issame)
    script = tmp_path / "seed_train.py"
    script.write_text(SCRIPT.format(data=tmp_path / "rec", bin=tmp_path / "val.bin"))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                            timeout=900, env={**_env(), "PYTHONPATH": str(ROOT)})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "SEED SCRIPT DONE" in result.stdout
    assert ">>>> val evaluation max accuracy:" in result.stdout  # the seed's evaluation line
    history = json.loads((tmp_path / "checkpoints" / "keras_mobilenet_emore_hist.json").read_text())
    assert len(history["loss"]) == 3  # two epochs kept, the third trained from the restored full model
    assert ">>>> Continuing from the model's classifier" in result.stdout
    assert (tmp_path / "hist.png").stat().st_size > 10_000
    assert "Traceback" not in output


def _env():
    import os

    return {key: value for key, value in os.environ.items() if key != "PYTEST_CURRENT_TEST"}

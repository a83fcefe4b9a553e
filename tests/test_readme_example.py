"""The README's Python training example, saved as a plain script (no ``if __name__ == "__main__":`` guard) and
run in a fresh interpreter with the default decode workers, on a tiny dataset: only the sizes are changed."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from keras_insightface.data.binpack import write_bin
from keras_insightface.data.insightface_rec import write_insightface_rec
from tests.conftest import class_images

ROOT = Path(__file__).resolve().parents[1]
# README text -> what the test runs instead (each must be in the example, so a changed README fails here)
SIZES = {
    '"datasets/faces_emore"': "DATA", '["lfw.bin"]': "[PACK]", 'buildin_models("r50"': 'buildin_models("r18_tiny"',
    "emb_shape=512": "emb_shape=16", "batch_size=512": "batch_size=12", '"mixed_bfloat16"': '"float32"',
    '"epoch": 40': '"epoch": 1', '"epoch": 5': '"epoch": 1', 'save_path="r50.keras"': "save_path=SAVE",
}


def readme_example():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    return next(block for block in blocks if "tt.train(" in block)


def test_the_readme_python_example_runs_as_a_script(tmp_path):
    code = readme_example()
    for old, new in SIZES.items():
        assert old in code, f"the README example no longer has {old}"
        code = code.replace(old, new)
    write_insightface_rec(tmp_path / "faces", class_images(6, 6), 6)
    pairs = class_images(6, 2, seed=3)
    index_pairs = [(2 * c, 2 * c + 1) for c in range(6)] + [(2 * c, (2 * c + 2) % 12) for c in range(6)]
    write_bin(tmp_path / "val.bin", [pairs[i][0] for pair in index_pairs for i in pair], [True] * 6 + [False] * 6)
    save = str(tmp_path / "out" / "r18.keras")
    script = tmp_path / "example.py"
    paths = {"DATA": str(tmp_path / "faces"), "PACK": str(tmp_path / "val.bin"), "SAVE": save}
    script.write_text("".join(f"{name} = {value!r}\n" for name, value in paths.items()) + code)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Worker process was terminated" not in result.stderr
    history = json.loads((tmp_path / "out" / "r18_hist.json").read_text())
    assert len(history["loss"]) == 3 and len(history["val"]) == 3  # three stages of one epoch, evaluated

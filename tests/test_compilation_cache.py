"""Importing the package turns on JAX's persistent compilation cache in the user's cache folder, unless the user
chose a folder or opted out; a second process then reuses the first one's compiled programs."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json
import keras_insightface
import jax, jax.numpy as jnp
jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64))).block_until_ready()
print(json.dumps({"dir": jax.config.jax_compilation_cache_dir}))
"""


def _probe(env):
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("JAX_COMPILATION_CACHE", "JAX_PERSISTENT_CACHE", "KERAS_INSIGHTFACE_"))}
    result = subprocess.run([sys.executable, "-c", PROBE], env={**clean, "PYTHONPATH": str(ROOT / "src"), **env},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_cache_is_on_by_default_in_the_user_cache_folder(tmp_path):
    folder = tmp_path / "keras_insightface" / "jax"
    assert _probe({"XDG_CACHE_HOME": str(tmp_path)})["dir"] == str(folder)
    written = sorted(path.name for path in folder.iterdir())
    assert written  # the compiled program was written for the next run
    _probe({"XDG_CACHE_HOME": str(tmp_path)})
    assert sorted(path.name for path in folder.iterdir()) == written  # and the next run found it: nothing new
    assert _probe({"XDG_CACHE_HOME": str(tmp_path), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "mine")})["dir"] == \
        str(tmp_path / "mine")  # the user's folder wins
    off = _probe({"XDG_CACHE_HOME": str(tmp_path / "other"), "KERAS_INSIGHTFACE_COMPILATION_CACHE": "0"})
    assert not off["dir"] and not (tmp_path / "other").exists()

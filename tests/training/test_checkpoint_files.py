"""Checkpoint files that cannot be read end with an error naming the file, not a traceback."""

import json

import pytest

from keras_insightface.errors import DataError
from keras_insightface.training.checkpoint import load_meta, read_variable


def test_a_truncated_state_file_is_named(tmp_path):
    state = tmp_path / "run_state"
    state.mkdir()
    text = json.dumps({"epoch": 1, "iterators": [{}], "variable_paths": ["norm_dense/norm_dense_w"]})
    (state / "state.json").write_text(text[: len(text) // 2])  # killed mid-write by something other than us
    for read in (load_meta, lambda directory: read_variable(directory, "norm_dense/norm_dense_w")):
        with pytest.raises(DataError, match=r"run_state/state.json: unreadable checkpoint state \(.*\); resume "):
            read(str(state))

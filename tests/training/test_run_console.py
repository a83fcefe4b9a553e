"""What a training run prints and keeps: the summary before the first step, plain progress lines when the output is
not a terminal, ``<name>_train.log`` holding the console's lines, the resume point, a finished run left alone,
every problem of a command line in one message, and the default run name."""

import re

from keras_insightface.cli import main
from keras_insightface.data.binpack import write_bin
from keras_insightface.data.insightface_rec import write_insightface_rec
from tests.conftest import class_images


def _data(tmp_path):
    write_insightface_rec(tmp_path / "faces", class_images(6, 6), 6)
    pairs = class_images(6, 2, seed=3)
    index_pairs = [(2 * c, 2 * c + 1) for c in range(6)] + [(2 * c, (2 * c + 2) % 12) for c in range(6)]
    write_bin(tmp_path / "val.bin", [pairs[i][0] for pair in index_pairs for i in pair], [True] * 6 + [False] * 6)
    return ["train", "--data", str(tmp_path / "faces"), "--eval", str(tmp_path / "val.bin"), "--model", "r18_tiny",
            "--emb-shape", "16", "--batch-size", "12", "--num-workers", "0", "--checkpoint-dir", str(tmp_path / "out")]


def test_a_run_prints_a_summary_plain_progress_and_keeps_a_log(tmp_path, capsys):
    argv = _data(tmp_path)
    assert main([*argv, "--scales", "16,32", "--epochs", "1,1"]) == 0
    out = capsys.readouterr().out
    # no save_path: named from the model, the loss and the data
    assert ">>>> run name r18_tiny_arcface_faces.keras" in out
    lines = out.splitlines()
    summary = {line.split(":")[0] for line in lines if line.startswith(">>>> ")}
    assert {">>>> run r18_tiny_arcface_faces", ">>>> data", ">>>> model", ">>>> schedule", ">>>> devices"} <= summary
    assert ">>>> data: faces, 36 images, 6 identities, 3 steps per epoch of 12" in lines
    model_line = next(line for line in lines if line.startswith(">>>> model: r18_tiny, "))
    assert re.search(r"[\d.]+ M parameters, [\d.]+ GFLOPs \(multiply-accumulates, 112x112\), 16-d embedding", model_line)
    assert re.search(r">>>> schedule: 2 stage\(s\), epochs 1..2; optimizer sgd, lr 0.1 \(cosine.*ArcfaceLoss\(scale=16\) "
                     r"x 1; 2: ArcfaceLoss\(scale=32\) x 1", out)
    assert re.search(r">>>> devices: 1 x cpu .*data-parallel over 1, float32", out)
    # captured output is not a terminal: plain lines, no escape codes or redrawn lines
    assert "\x1b" not in out and "\r" not in out and "\b" not in out
    progress = [line for line in lines if re.match(r"epoch \d: \d/3 \(\d+%\)", line)]
    assert progress[0].startswith("epoch 1: 1/3 (33%) - ")  # the first step, then one line at most every 30 s
    ends = [line for line in progress if "3/3" in line]
    assert len(ends) == 2 and re.match(r"epoch 1: 3/3 \(100%\) - \d+:\d\d elapsed - .* - loss: [\d.]+", ends[0])
    log = (tmp_path / "out" / "r18_tiny_arcface_faces_train.log").read_text()
    log_lines = log.splitlines()
    for line in (*progress, lines[-1], "| epoch | stage | lr | loss | accuracy | val | val thresh | val 10-fold |"):
        assert line in log_lines  # the console's lines, the results table and the last line included
    assert "\x1b" not in log and "\r" not in log
    assert (tmp_path / "out" / "r18_tiny_arcface_faces.png").is_file()

    # a longer schedule continues from the end of the last epoch and says where it resumed
    assert main([*argv, "--scales", "16,32", "--epochs", "1,2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert re.search(r">>>> resuming from .*r18_tiny_arcface_faces_state: stage 2/2, the start of epoch 3", out)
    assert "resuming from" in (tmp_path / "out" / "r18_tiny_arcface_faces_train.log").read_text()

    # the same schedule again: the run is finished, nothing is built or trained
    assert main([*argv, "--scales", "16,32", "--epochs", "1,2", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "the run r18_tiny_arcface_faces is finished" in out and "end of epoch 3" in out
    assert ">>>> model:" not in out and "Stage 1" not in out


def test_every_problem_of_a_command_line_in_one_message(tmp_path, capsys):
    argv = _data(tmp_path)
    genuine_only = tmp_path / "genuine.bin"
    write_bin(genuine_only, [image for image, _ in class_images(2, 12, seed=3)], [True] * 12)
    argv = [*argv, "--eval", str(genuine_only), "--model", "r5O", "--data", str(tmp_path / "missing"),
            "--lr-base", "fast", "--resume"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    message = err[err.index("keras-insightface train: error: "):]
    lines = message.splitlines()
    assert lines[0].endswith("5 problems, nothing was started:")
    assert re.search(r"lr_base", lines[1])
    assert any("missing: dataset path does not exist" in line for line in lines)
    assert any(re.search(r"genuine.bin: 12 pairs \(12 genuine\).*convert make-bin", line) for line in lines)
    assert any("Unknown backbone 'r5O' (did you mean 'r50'" in line for line in lines)
    assert any("no checkpoint to resume from" in line for line in lines)

"""Generate the data of ``bench/gpu.sh`` on the machine that runs it, timed: the synthetic ``.rec`` and ``.bin`` pack
of ``bench/train.py`` (its ``make_data``: ``demo.synthetic.generate_dataset`` rendering in one forked process per
core), written where ``train.py --data-dir`` with the same settings finds and reuses them.

    python bench/gpu_data.py --data-dir /tmp/gpu_bench/data --classes 93431 --images-per-class 2
    python bench/gpu_data.py --data-dir /tmp/gpu_bench/data --classes 32 --images-per-class 8 --eval-pairs 50

Prints ``RESULT data_images``, ``RESULT data_gen_s`` and ``RESULT data_gen_img/s`` (training images per second of
the whole generation: the pack's few hundred held-out faces are rendered in that time too). A dataset of the same
settings already there is reused and only ``data_images`` is printed: delete ``--data-dir`` to time it.
"""

import argparse
import glob
import os

from train import make_data


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--images-per-class", type=int, required=True)
    parser.add_argument("--eval-pairs", type=int, default=500, help="genuine (and impostor) pairs in the .bin")
    args = parser.parse_args()

    stamps = set(glob.glob(os.path.join(args.data_dir, "*", "synthetic.json")))  # generate_dataset's "done" stamps
    train_dir, bin_path, seconds = make_data(args.data_dir, args.classes, args.images_per_class, args.eval_pairs)
    reused = os.path.join(train_dir, "synthetic.json") in stamps
    rec = os.path.join(train_dir, "train.rec")
    if not os.path.isfile(rec) or not os.path.isfile(bin_path):
        raise FileNotFoundError(f"{train_dir}: generate_dataset wrote no train.rec or {os.path.basename(bin_path)}")
    train_images = args.classes * args.images_per_class
    print(f"data: {train_dir}: train.rec {os.path.getsize(rec) / 1e6:.1f} MB ({train_images} images, "
          f"{args.classes} identities), {bin_path} {os.path.getsize(bin_path) / 1e6:.1f} MB; "
          f"{os.cpu_count()} rendering processes; {seconds:.1f} s" + (" (reused, not generated)" if reused else ""))
    print(f"RESULT data_images {train_images} images")
    if reused:
        print("data: reused the dataset already in --data-dir, so its generation is not timed")
        return
    print(f"RESULT data_gen_s {seconds:.1f} s")
    print(f"RESULT data_gen_img/s {train_images / seconds:.1f} img/s")


if __name__ == "__main__":
    main()

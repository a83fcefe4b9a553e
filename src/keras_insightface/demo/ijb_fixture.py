"""A small IJB-format dataset (loose crops with known landmarks, meta files in the real formats) for tests.

Each identity has one gallery template (in ``G1`` for even identities, ``G2`` for odd; IJB-B: ``S1``, ``S2``)
and ``probe_templates`` probe templates; each template has ``media`` medias of ``images`` images. Faces come
from ``data.synthetic_faces`` (112x112, about in the ArcFace template's pose), placed on a larger noisy
canvas by a random similarity transform; the five landmarks written are the ArcFace template points moved by
that transform, so ``align.norm_crop`` recovers the face. The 1:1 pairs are every gallery x probe template
(label 1 for the same identity), as IJB's protocol pairs them; the 1:N probe CSV lists every probe template.

Example:
    >>> from keras_insightface.evaluation.ijb_meta import read_meta
    >>> root = make_ijb_fixture(getfixture("tmp_path"), identities=2, probe_templates=1, media=1, images=2)
    >>> meta = read_meta(root, "IJBC")
    >>> len(meta.names), len(np.unique(meta.templates)), meta.labels.astype(int).tolist()
    (8, 4, [1, 0, 0, 1])
"""

from pathlib import Path

import numpy as np
import simplejpeg

from keras_insightface.inference.align import ARCFACE_TEMPLATE, warp_affine
from keras_insightface.evaluation.ijb_meta import GALLERIES, SUBSETS


def placement(rng, canvas):
    """A random similarity (2x3) taking 112x112 face coordinates onto the ``(height, width)`` canvas."""
    scale, angle = rng.uniform(0.85, 1.25), np.deg2rad(rng.uniform(-25, 25))
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([canvas[1], canvas[0]]) / 2 + rng.uniform(-8, 8, 2)
    return np.c_[linear, centre - linear @ np.array([56.0, 56.0])]


def place_face(face, matrix, canvas, rng):
    """``face`` warped by ``matrix`` onto a ``canvas``-sized noisy background (uint8 RGB)."""
    background = rng.integers(40, 200, (1, 1, 3)) + rng.normal(0, 12, (*canvas, 3))
    warped = warp_affine(face, matrix, canvas).astype(np.float64)
    mask = warp_affine(np.full((*face.shape[:2], 1), 255, np.uint8), matrix, canvas) / 255.0
    return np.clip(warped * mask + background * (1 - mask), 0, 255).astype(np.uint8)


def make_ijb_fixture(root, subset="IJBC", identities=6, probe_templates=2, media=2, images=2, canvas=(150, 170),
                     difficulty=0.3, seed=0):
    """Write ``root/<subset>/{meta,loose_crop}`` (see the module docstring) and return ``root/<subset>``."""
    from keras_insightface.demo.synthetic_faces import render_faces, sample_identities

    subset = subset.upper()
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {SUBSETS}, received {subset!r}")
    rng = np.random.default_rng(seed)
    folder = Path(root) / subset
    (folder / "meta").mkdir(parents=True, exist_ok=True)
    (folder / "loose_crop").mkdir(parents=True, exist_ok=True)
    templates_per_identity = 1 + probe_templates
    template_identity = np.repeat(np.arange(identities), templates_per_identity)
    per_template = media * images
    image_identity = np.repeat(template_identity, per_template)
    faces = render_faces(sample_identities(identities, seed), image_identity, seed + 1, difficulty=difficulty)

    media_lines, point_lines = [], []
    for index, face in enumerate(faces):
        template = index // per_template
        medium = 1000 + template * media + (index % per_template) // images
        matrix = placement(rng, canvas)
        points = ARCFACE_TEMPLATE.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
        name = f"{index + 1}.jpg"
        image = place_face(face, matrix, canvas, rng)
        (folder / "loose_crop" / name).write_bytes(simplejpeg.encode_jpeg(image, quality=92))
        media_lines.append(f"{name} {template + 1} {medium}")
        coords = " ".join(f"{v:.3f}" for v in points.reshape(-1))
        point_lines.append(f"{name} {coords} {rng.uniform(0.6, 1.0):.3f}")

    template_ids = np.arange(1, len(template_identity) + 1)
    is_gallery = np.arange(len(template_identity)) % templates_per_identity == 0
    gallery, probes = template_ids[is_gallery], template_ids[~is_gallery]
    pair_lines = [
        f"{g} {p} {int(template_identity[g - 1] == template_identity[p - 1])}" for g in gallery for p in probes
    ]
    lower = subset.lower()
    (folder / "meta" / f"{lower}_face_tid_mid.txt").write_text("\n".join(media_lines) + "\n")
    (folder / "meta" / f"{lower}_name_5pts_score.txt").write_text("\n".join(point_lines) + "\n")
    (folder / "meta" / f"{lower}_template_pair_label.txt").write_text("\n".join(pair_lines) + "\n")

    def csv_rows(chosen):
        rows = ["TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID"]
        for template in chosen:
            for k in range(per_template):
                image = (template - 1) * per_template + k + 1
                rows.append(f"{template},{100 + template_identity[template - 1]},img/{image}.jpg,{image}")
        return "\n".join(rows) + "\n"

    first, second = GALLERIES[subset]
    even = template_identity[gallery - 1] % 2 == 0
    (folder / "meta" / f"{lower}_1N_gallery_{first}.csv").write_text(csv_rows(gallery[even]))
    (folder / "meta" / f"{lower}_1N_gallery_{second}.csv").write_text(csv_rows(gallery[~even]))
    (folder / "meta" / f"{lower}_1N_probe_mixed.csv").write_text(csv_rows(probes))
    return folder

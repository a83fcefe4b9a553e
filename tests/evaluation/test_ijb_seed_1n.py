"""IJB 1:N (CMC top-k, TPIR at FPIR, the galleries' mean) against the seed's ``IJB_evals.py`` rule, restated
here one probe at a time from its description:

- a probe is mated when its subject has a gallery template; its rank is its own template's place in the
  gallery scores ordered by ``argsort`` reversed (stable sort: the later of tied templates first); top-k counts
  a place < k; CMC is the count over the mated probes, and the galleries' mean is both counts over all probes;
- a mated probe is correct at an FPIR when its own score is above every other gallery score and above the
  non-mated probes' best scores sorted descending, taken at ``max(int(n x FPIR) - 1, 0)``;
- the FPIRs are ``10 ** e`` for ``e`` in ``np.arange(-4, 0, 0.04)``, then 1; the mean TPIR is the galleries'
  average.
"""

import numpy as np
import pytest

from keras_insightface.evaluation import ijb


def _seed_fars():
    return [10**e for e in np.arange(-4, 0, 4 / 100)] + [1]


def _seed_gallery(probes, probe_ids, gallery, gallery_ids, fars):
    """``(top-1, top-5, top-10 counts, thresholds, TPIRs)`` of one gallery, one probe at a time."""
    similarity = probes @ gallery.T
    top = {1: 0, 5: 0, 10: 0}
    own_scores, best_others, non_mated_best = [], [], []
    for row, subject in zip(similarity, probe_ids):
        match = np.flatnonzero(gallery_ids == subject)
        if len(match) == 0:
            non_mated_best.append(row.max())
            continue
        place = int(np.flatnonzero(np.argsort(row, kind="stable")[::-1] == match[0])[0])
        for k in top:
            top[k] += place < k
        own_scores.append(row[match[0]])
        best_others.append(np.delete(row, match[0]).max())
    own_scores, best_others = np.array(own_scores), np.array(best_others)
    ranked = np.sort(non_mated_best)[::-1]
    thresholds, tpirs = [], []
    for far in fars:
        threshold = ranked[max(int(len(ranked) * far) - 1, 0)]
        thresholds.append(threshold)
        tpirs.append(np.sum((own_scores > best_others) & (own_scores > threshold)) / len(own_scores))
    return top, len(own_scores), np.array(thresholds), np.array(tpirs)


def _templates(rng, count, dim, ties):
    features = rng.normal(size=(count, dim))
    if ties:  # a few values only: tied scores between gallery templates are common
        features = np.round(features).clip(-1, 1)
        features[np.abs(features).sum(axis=1) == 0, 0] = 1
    return (features / np.linalg.norm(features, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, False), (2, True), (3, True)])
def test_two_galleries_and_the_mean_equal_the_seed(seed, ties):
    rng = np.random.default_rng(seed)
    dim = 4 if ties else 16
    subjects = rng.permutation(np.arange(1000, 1400))[:120]
    g1_ids, g2_ids = np.sort(subjects[:60]), np.sort(subjects[60:])
    g1, g2 = _templates(rng, 60, dim, ties), _templates(rng, 60, dim, ties)
    probe_ids = np.r_[rng.choice(subjects, 500), rng.integers(5000, 6000, 300)]  # 300 non-mated probes
    centres = {s: f for s, f in zip(np.r_[g1_ids, g2_ids], np.r_[g1, g2])}
    probes = np.stack([centres.get(s, np.zeros(dim, np.float32)) for s in probe_ids])
    probes = probes + rng.normal(0, 0.8, probes.shape).astype(np.float32)
    probes = probes if not ties else np.round(probes)
    probes = (probes / np.maximum(np.linalg.norm(probes, axis=1, keepdims=True), 1e-6)).astype(np.float32)

    fars = _seed_fars()
    np.testing.assert_array_equal(ijb.fpir_grid(), fars)
    ours = {name: ijb.identification(probes, probe_ids, gallery, ids, max_rank=10)
            for name, gallery, ids in (("G1", g1, g1_ids), ("G2", g2, g2_ids))}
    seeds = {name: _seed_gallery(probes, probe_ids, gallery, ids, fars)
             for name, gallery, ids in (("G1", g1, g1_ids), ("G2", g2, g2_ids))}
    for name in ours:
        top, mated, thresholds, tpirs = seeds[name]
        assert ours[name]["mated"] == mated
        assert [int(ours[name]["hits"][k - 1]) for k in (1, 5, 10)] == [top[1], top[5], top[10]]
        np.testing.assert_array_equal(ours[name]["cmc"][[0, 4, 9]], [top[k] / mated for k in (1, 5, 10)])
        np.testing.assert_array_equal(ours[name]["thresholds"], thresholds)
        np.testing.assert_array_equal(ours[name]["tpir"], tpirs)
    mean = ijb.combine_galleries(ours.values())
    counts = {k: seeds["G1"][0][k] + seeds["G2"][0][k] for k in (1, 5, 10)}
    np.testing.assert_array_equal(mean["cmc"][[0, 4, 9]], [counts[k] / len(probes) for k in (1, 5, 10)])
    np.testing.assert_array_equal(mean["tpir"], (seeds["G1"][3] + seeds["G2"][3]) / 2)

    table = ijb.identification_table({"mean": mean}).splitlines()[2]
    shown = [counts[k] / len(probes) for k in (1, 5, 10)] + list((seeds["G1"][3] + seeds["G2"][3])[:100:25] / 2)
    assert table == "| mean | " + " | ".join("%.2f" % (100 * v) for v in shown) + " |"  # the seed's columns


def test_a_tie_with_another_template_is_no_tpir_hit():
    """The own score equal to another template's: ranked first when that template comes earlier (stable sort,
    reversed), yet no TPIR hit, as the seed requires the own score above every other."""
    gallery = np.eye(3, dtype=np.float32)
    probes = np.array([[0.6, 0.6, 0.0], [0.0, 0.6, 0.6], [0.1, 0.0, 0.0]], np.float32)  # subject 11 tied
    result = ijb.identification(probes, [11, 11, 99], gallery, [10, 11, 12], max_rank=2, fpirs=[1.0])
    # probe 1 ties template 10 (earlier): first; probe 2 ties template 12 (later): second
    assert result["hits"].tolist() == [1, 2]
    assert result["tpir"].tolist() == [0.0]

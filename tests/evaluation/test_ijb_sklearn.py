"""IJB 1:1 TAR at FAR and AUC against scikit-learn's ``roc_curve`` / ``auc`` with insightface's selection rule.

The reference is the published tables' recipe (insightface ``ijb_11.py``, the seed's ``IJB_evals.py``): the
curve from ``roc_curve`` with its default ``drop_intermediate=True``, reversed, the first point of smallest
``|FPR - target|``; AUC is ``auc(fpr, tpr)`` of the same curve.
"""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import auc, roc_curve

from keras_insightface.evaluation import ijb

FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def _field(scores, labels, fars=FARS):
    """``(fpr, tpr, thresholds, TAR at each FAR, thresholds chosen, AUC)`` by scikit-learn and insightface's rule."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thresholds = roc_curve(labels, scores)
    with np.errstate(invalid="ignore"):
        area = auc(fpr, tpr)
    backwards = np.arange(len(fpr))[::-1]  # ties of |FPR - target| go to the highest TPR
    chosen = [backwards[np.argmin(np.abs(fpr[backwards] - far))] for far in fars]
    return fpr, tpr, thresholds, tpr[chosen], thresholds[chosen], area


def _assert_same(scores, labels, fars=FARS):
    fpr, tpr, thresholds, tars, chosen, area = _field(scores, labels, fars)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        roc = ijb.Roc(scores, labels)
    np.testing.assert_array_equal(roc.fpr, fpr)
    np.testing.assert_array_equal(roc.tpr, tpr)
    np.testing.assert_array_equal(roc.roc_thresholds, thresholds)
    np.testing.assert_array_equal(roc.tar_at_far(fars), tars)  # to the last digit
    np.testing.assert_array_equal(roc.thresholds(fars), chosen)
    if np.isnan(area):
        assert np.isnan(roc.auc())
    else:
        assert abs(roc.auc() - area) <= 1e-12
    return roc


def _full_roc_nearest(scores, labels, far):
    """The old rule: every distinct threshold's ROC point, reversed, the first of FAR nearest ``far``."""
    levels = np.r_[np.inf, np.unique(scores)[::-1]]
    fpr = np.array([(scores[~labels] >= t).mean() for t in levels])[::-1]
    tpr = np.array([(scores[labels] >= t).mean() for t in levels])[::-1]
    return tpr[np.argmin(np.abs(fpr - far))]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_random_scores_float32_and_float64(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(2_000, 60_000))
    labels = rng.random(size) < rng.uniform(0.01, 0.3)
    scores = rng.normal(labels * rng.uniform(0.5, 3.0), 1.0)
    _assert_same(scores, labels)
    _assert_same(scores.astype(np.float32), labels)
    _assert_same(np.round(scores, 2).astype(np.float32), labels, fars=(1e-4, 1e-3, 3e-3, 1e-2, 0.1, 0.5))


def test_an_ijb_like_tail_of_float32_ties():
    """400,000 impostors and 4,000 genuine float32 cosines rounded to 1e-4: ties between the two kinds."""
    rng = np.random.default_rng(7)
    genuine = np.clip(rng.normal(0.55, 0.15, 4_000), -1, 1)
    impostor = np.clip(rng.normal(0.0, 0.1, 400_000), -1, 1)
    scores = np.round(np.r_[genuine, impostor], 4).astype(np.float32)
    labels = np.r_[np.ones(4_000, bool), np.zeros(400_000, bool)]
    roc = _assert_same(scores, labels)
    assert len(roc.fpr) < len(np.unique(scores))  # collinear points were dropped


def test_ties_duplicates_and_mixed_levels():
    scores = np.array([0.9, 0.9, 0.9, 0.8, 0.8, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1])
    labels = np.array([1, 1, 0, 1, 0, 1, 0, 0, 1, 0, 0, 0], bool)
    _assert_same(scores, labels, fars=(0.0, 1 / 7, 0.2, 2 / 7, 0.5, 1.0))
    doubled = _assert_same(np.r_[scores, scores], np.r_[labels, labels], fars=(0.1, 0.25, 0.6))
    assert len(doubled.fpr) == len(_assert_same(scores, labels).fpr)  # duplicates change no ROC point
    _assert_same(np.zeros(50), np.arange(50) % 5 == 0)  # one level: the curve (0, 0), (1, 1)
    _assert_same(np.r_[np.ones(5), np.zeros(5)], np.r_[np.ones(5, bool), np.zeros(5, bool)])  # perfect


def test_collinear_points_are_dropped_as_scikit_learn_and_change_the_tar():
    """Twenty levels each holding one genuine and one impostor make a straight ROC segment: scikit-learn keeps its
    two ends, so at FAR 1e-2 (10 impostors) the field reads an end point, not the full ROC's point at 10."""
    impostor = np.r_[np.linspace(0.9, 0.95, 20), np.linspace(-1.0, 0.5, 980)]
    genuine = np.r_[np.linspace(0.9, 0.95, 20), np.linspace(0.96, 1.0, 30), np.linspace(-1.0, 0.5, 50)]
    scores, labels = np.r_[genuine, impostor], np.r_[np.ones(100, bool), np.zeros(1000, bool)]
    roc = _assert_same(scores, labels, fars=(1e-2, 2e-2, 5e-3))
    field = roc.tar_at_far([1e-2])[0]
    assert field in (0.30, 0.50)  # one end of the segment (FAR 0 or 0.02)
    assert _full_roc_nearest(scores, labels, 1e-2) == pytest.approx(0.40)  # the rule this replaced
    assert roc.tar_at_far([1e-2], rule="at_most")[0] == pytest.approx(0.40)  # the full ROC keeps it


@pytest.mark.parametrize("genuine", [True, False])
def test_one_kind_of_labels_gives_scikit_learn_nan(genuine):
    scores = np.random.default_rng(3).normal(size=200)
    labels = np.full(200, genuine)
    with pytest.warns(UserWarning, match="no impostor scores" if genuine else "no genuine scores"):
        roc = ijb.Roc(scores, labels)
    _assert_same(scores, labels)
    expected = np.ones(len(FARS)) if genuine else np.full(len(FARS), np.nan)  # nan FPR: argmin takes the first
    np.testing.assert_array_equal(roc.tar_at_far(), expected)
    assert np.isnan(roc.auc())


def test_the_table_prints_insightface_percentages():
    rng = np.random.default_rng(11)
    labels = rng.random(20_000) < 0.05
    scores = rng.normal(labels * 2.0, 1.0).astype(np.float32)
    _, _, _, tars, _, area = _field(scores, labels)
    row = "| m | " + " | ".join("%.2f" % (100 * v) for v in tars) + " | %.2f |" % (100 * area)
    assert ijb.markdown_table({"m": ijb.Roc(scores, labels)}).splitlines()[2] == row

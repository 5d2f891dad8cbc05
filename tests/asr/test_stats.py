"""Statistics against known distributions: interval coverage, Wilcoxon on a known shift, Holm, Spearman."""

import numpy as np
import pytest

from speechtrt.asr import stats


def _clustered_sample(rng, speakers=20, utts=8, words=10, mean=0.2, concentration=8.0):
    """Errors with a per-speaker rate ~ Beta (speaker effect); the population corpus WER is ``mean``."""
    p = rng.beta(mean * concentration, (1 - mean) * concentration, size=speakers)
    groups = np.repeat(np.arange(speakers), utts)
    errors = rng.binomial(words, p[groups])
    return errors, np.full(errors.shape, words), groups


def test_speaker_bootstrap_covers_the_true_wer_about_95_percent():
    rng = np.random.default_rng(1)
    hits_speaker = hits_utterance = 0
    reps = 150
    for r in range(reps):
        e, w, g = _clustered_sample(rng)
        ci = stats.bootstrap_ratio_ci(e, w, g, n_boot=400, seed=r)
        hits_speaker += ci.low <= 0.2 <= ci.high
        naive = stats.bootstrap_ratio_ci(e, w, np.arange(len(e)), n_boot=400, seed=r)
        hits_utterance += naive.low <= 0.2 <= naive.high
    assert 0.87 <= hits_speaker / reps <= 0.99
    # ignoring speakers under-covers when speakers differ: the reason intervals resample speakers
    assert hits_utterance / reps < hits_speaker / reps - 0.1


def test_bootstrap_interval_of_one_speaker_is_the_point_estimate():
    ci = stats.bootstrap_ratio_ci([1, 2], [10, 10], ["s", "s"])
    assert ci.low == ci.high == ci.estimate == pytest.approx(0.15)


def test_wilcoxon_detects_a_known_shift_and_not_its_absence():
    rng = np.random.default_rng(0)
    a = rng.normal(size=80)
    assert stats.wilcoxon_p(a + 0.6 + 0.3 * rng.normal(size=80), a) < 1e-6
    assert stats.wilcoxon_p(a + 0.3 * rng.normal(size=80), a) > 0.01
    assert stats.wilcoxon_p(a, a) == 1.0


def test_wilcoxon_is_uniform_under_the_null():
    rng = np.random.default_rng(3)
    p = np.array([stats.wilcoxon_p(rng.normal(size=40), rng.normal(size=40)) for _ in range(400)])
    assert 0.02 <= (p < 0.05).mean() <= 0.09


def test_paired_bootstrap_identical_and_clearly_worse_systems():
    rng = np.random.default_rng(2)
    e, w, g = _clustered_sample(rng)
    same = stats.paired_bootstrap(e, e, w, g, n_boot=500)
    assert same.difference == 0 and same.p_bootstrap == 1.0 and same.p_wilcoxon == 1.0
    worse = stats.paired_bootstrap(e + 2, e, w, g, n_boot=500)
    assert worse.difference == pytest.approx(0.2)
    assert worse.ci95[0] > 0 and worse.p_bootstrap < 0.01 and worse.p_wilcoxon < 1e-6


def test_independent_bootstrap_separates_different_dialects():
    rng = np.random.default_rng(4)
    ea, wa, ga = _clustered_sample(rng, mean=0.1)
    eb, wb, gb = _clustered_sample(rng, mean=0.4)
    c = stats.independent_bootstrap(ea, wa, ga, eb, wb, gb + 100, n_boot=500)
    assert c.ci95[1] < 0 and c.p_bootstrap < 0.01 and c.p_wilcoxon is None


def test_holm_on_known_pvalues():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]) == []


def test_spearman_known_cases():
    x = np.arange(20, dtype=float)
    assert stats.spearman(x, x ** 3)["rho"] == pytest.approx(1.0)
    assert stats.spearman(x, -x)["rho"] == pytest.approx(-1.0)
    assert stats.spearman(x, np.ones(20))["rho"] is None
    r = stats.spearman(x, np.random.default_rng(0).permutation(x))
    assert -1 < r["rho"] < 1 and 0 < r["p_value"] <= 1

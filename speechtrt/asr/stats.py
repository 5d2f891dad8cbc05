"""Statistics for ASR comparisons that respect how the data were made.

Utterances are not independent draws: each speaker contributes many, and a speaker's voice drives most of the
variation. Intervals therefore come from a **cluster bootstrap over speakers** (resample whole speakers with
replacement, recompute the corpus WER = Σ errors / Σ reference words). Two models are compared **paired** on the same
utterances (a paired speaker bootstrap of the corpus-WER difference, and a Wilcoxon signed-rank test on
per-utterance error counts). Dialects, which have disjoint speakers, are compared by bootstrapping each dialect's
speakers independently; the family of dialect pairs is corrected with Holm's step-down method.

Why not the seed's ``scipy.stats.ttest_ind`` on per-utterance WER: (1) it is unpaired although both models read the
same utterances, discarding the pairing that removes between-utterance variance; (2) it treats utterances of one
speaker as independent, so its p-values are too small; (3) per-utterance WER is a bounded, zero-inflated, skewed
ratio (a 3-word sentence with one error weighs like a 30-word sentence with ten), so the mean it tests is not the
corpus WER being reported; (4) run over all pairs of models or dialects without correction, it inflates the
family-wise error rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

METHOD = (
    "95 % intervals: cluster bootstrap over speakers of the corpus WER. Model vs model: paired speaker bootstrap of "
    "the corpus-WER difference on the same utterances, and a Wilcoxon signed-rank test on per-utterance error "
    "counts; Holm-corrected across model pairs. Dialect vs dialect: each dialect's speakers resampled "
    "independently; Holm-corrected across dialect pairs. No unpaired t-test on per-utterance WER: it ignores the "
    "pairing, treats one speaker's utterances as independent, tests a mean of bounded skewed ratios instead of the "
    "corpus WER, and is uncorrected for multiple comparisons."
)


def _cluster_index(groups) -> list[np.ndarray]:
    groups = np.asarray(groups)
    _, inverse = np.unique(groups, return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)] if len(groups) else []


def _cluster_sums(values: np.ndarray, clusters: list[np.ndarray]) -> np.ndarray:
    return np.array([values[idx].sum() for idx in clusters], dtype=np.float64)


def _draws(n_clusters: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n_clusters, size=(n_boot, n_clusters))


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n_boot: int
    clusters: int

    def to_json(self) -> list[float]:
        return [self.low, self.high]


def bootstrap_ratio_ci(errors, words, groups, n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> Interval:
    """Percentile interval of ``Σ errors / Σ words`` resampling whole ``groups`` (speakers) with replacement.

    ``errors``, ``words``, ``groups``: one entry per utterance. With one group the interval is the point estimate
    (there is nothing to resample: say so rather than invent precision).
    """
    errors, words = np.asarray(errors, dtype=np.float64), np.asarray(words, dtype=np.float64)
    est = float(errors.sum() / words.sum()) if words.sum() else 0.0
    clusters = _cluster_index(groups)
    if len(clusters) < 2:
        return Interval(est, est, est, 0, len(clusters))
    e, w = _cluster_sums(errors, clusters), _cluster_sums(words, clusters)
    idx = _draws(len(clusters), n_boot, np.random.default_rng(seed))
    num, den = e[idx].sum(axis=1), w[idx].sum(axis=1)
    ratios = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    lo, hi = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return Interval(est, float(lo), float(hi), n_boot, len(clusters))


@dataclass(frozen=True)
class PairedComparison:
    """Corpus WER of A minus B on the same utterances, its speaker-bootstrap interval and p-value, and Wilcoxon."""

    difference: float
    ci95: tuple[float, float]
    p_bootstrap: float
    p_wilcoxon: float | None
    utterances: int
    speakers: int

    def to_json(self) -> dict:
        return {"wer_difference": self.difference, "ci95": list(self.ci95), "p_bootstrap": self.p_bootstrap,
                "p_wilcoxon": self.p_wilcoxon, "utterances": self.utterances, "speakers": self.speakers}


def _two_sided_p(samples: np.ndarray) -> float:
    """Bootstrap p-value for 'difference = 0': twice the smaller tail mass at 0 (add-one corrected), at most 1."""
    n = len(samples)
    tail = min((samples <= 0).sum(), (samples >= 0).sum())
    return float(min(1.0, 2 * (tail + 1) / (n + 1)))


def paired_bootstrap(errors_a, errors_b, words, groups, n_boot: int = 2000, seed: int = 0) -> PairedComparison:
    """Paired comparison of two systems scored on the same utterances (same order in both arrays)."""
    ea, eb = np.asarray(errors_a, dtype=np.float64), np.asarray(errors_b, dtype=np.float64)
    w = np.asarray(words, dtype=np.float64)
    diff = float((ea.sum() - eb.sum()) / w.sum()) if w.sum() else 0.0
    clusters = _cluster_index(groups)
    p_w = wilcoxon_p(ea, eb)
    if len(clusters) < 2:
        return PairedComparison(diff, (diff, diff), 1.0, p_w, len(ea), len(clusters))
    sa, sb, sw = (_cluster_sums(x, clusters) for x in (ea, eb, w))
    idx = _draws(len(clusters), n_boot, np.random.default_rng(seed))
    den = sw[idx].sum(axis=1)
    d = np.divide(sa[idx].sum(axis=1) - sb[idx].sum(axis=1), den, out=np.zeros(n_boot), where=den > 0)
    lo, hi = np.quantile(d, [0.025, 0.975])
    return PairedComparison(diff, (float(lo), float(hi)), _two_sided_p(d), p_w, len(ea), len(clusters))


def wilcoxon_p(a, b) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired samples; 1.0 when every pair is equal, None when n < 1."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0:
        return None
    if np.all(a == b):
        return 1.0
    return float(sps.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided").pvalue)


def independent_bootstrap(errors_a, words_a, groups_a, errors_b, words_b, groups_b, n_boot: int = 2000,
                          seed: int = 0) -> PairedComparison:
    """Corpus-WER difference of two sets with disjoint speakers (e.g. two dialects): each set's speakers are
    resampled independently. ``p_wilcoxon`` is None (nothing is paired)."""
    rng = np.random.default_rng(seed)
    parts = []
    for errors, words, groups in ((errors_a, words_a, groups_a), (errors_b, words_b, groups_b)):
        e, w = np.asarray(errors, dtype=np.float64), np.asarray(words, dtype=np.float64)
        clusters = _cluster_index(groups)
        se, sw = _cluster_sums(e, clusters), _cluster_sums(w, clusters)
        idx = _draws(len(clusters), n_boot, rng)
        den = sw[idx].sum(axis=1)
        parts.append((e.sum() / w.sum(), np.divide(se[idx].sum(axis=1), den, out=np.zeros(n_boot), where=den > 0),
                      len(clusters), len(e)))
    (ra, da, ca, na), (rb, db, cb, nb) = parts
    d = da - db
    lo, hi = np.quantile(d, [0.025, 0.975])
    return PairedComparison(float(ra - rb), (float(lo), float(hi)), _two_sided_p(d), None, na + nb, ca + cb)


def independent_ratio_bootstrap(errors_a, words_a, groups_a, errors_b, words_b, groups_b, n_boot: int = 2000,
                                seed: int = 0) -> Interval | None:
    """Percentile interval of corpus WER(a) / corpus WER(b) for two sets with disjoint speakers (e.g. held-out
    voices against voices heard in training), each set's speakers resampled independently.

    None when a set has fewer than two speakers (nothing to resample) or WER(b) is 0 (no ratio); resamples whose
    WER(b) is 0 are dropped, and ``n_boot`` says how many were kept.
    """
    sets = []
    for errors, words, groups in ((errors_a, words_a, groups_a), (errors_b, words_b, groups_b)):
        e, w = np.asarray(errors, dtype=np.float64), np.asarray(words, dtype=np.float64)
        clusters = _cluster_index(groups)
        if len(clusters) < 2 or not w.sum():
            return None
        sets.append((e, w, clusters))
    (ea, wa, ca), (eb, wb, cb) = sets
    if not eb.sum():
        return None
    estimate = float((ea.sum() / wa.sum()) / (eb.sum() / wb.sum()))
    rng = np.random.default_rng(seed)
    wers = []
    for e, w, clusters in sets:
        se, sw = _cluster_sums(e, clusters), _cluster_sums(w, clusters)
        idx = _draws(len(clusters), n_boot, rng)
        den = sw[idx].sum(axis=1)
        wers.append(np.divide(se[idx].sum(axis=1), den, out=np.zeros(n_boot), where=den > 0))
    keep = wers[1] > 0
    ratios = wers[0][keep] / wers[1][keep]
    if not len(ratios):
        return None
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    return Interval(estimate, float(lo), float(hi), int(keep.sum()), len(ca) + len(cb))


def holm(pvalues) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def spearman(x, y) -> dict:
    """Spearman rank correlation with its two-sided p-value; ``rho`` None when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return {"rho": None, "p_value": None, "n": int(len(x))}
    r = sps.spearmanr(x, y)
    return {"rho": float(r.statistic), "p_value": float(r.pvalue), "n": int(len(x))}


def percentile(values, q: float) -> float | None:
    v = np.asarray(values, dtype=np.float64)
    return float(np.percentile(v, q)) if len(v) else None

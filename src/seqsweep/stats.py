"""Statistics of the comparison: summaries of repeats, ranking, and which configurations are
statistically indistinguishable from the best (Welch's t-test with Holm–Bonferroni correction).

Repeats are what make "is the difference real?" answerable; this module is the only place that
answers it, so the table, summary.json and MLflow all say the same thing."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

METHOD = (
    "Welch's two-sided t-test of each configuration against the best (highest mean) of its dataset, "
    "Holm–Bonferroni correction over those comparisons"
)

BEST = "best"
TIE = "indistinguishable"
WORSE = "worse"
UNTESTABLE = "n/a (n<2)"
BEST_UNTESTABLE = "n/a (best has n<2)"


@dataclass(frozen=True)
class Summary:
    """n, mean, sample std (ddof=1, None when n < 2), min and max of finished repeats."""

    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


@dataclass(frozen=True)
class Comparison:
    """One configuration against the best: raw and Holm-adjusted p-values and the verdict; the
    difference of its mean to the best's with a 95% bootstrap interval, and Hedges' g (effect size)."""

    verdict: str
    p_value: float | None = None
    p_holm: float | None = None
    diff: float | None = None  # mean - best mean (<= 0)
    diff_ci: tuple[float, float] | None = None
    hedges_g: float | None = None


CONFIDENCE = 0.95
RESAMPLES = 9999  # bootstrap resamples; seeded, so the same repeats always give the same intervals


def _bootstrap(samples: tuple, statistic) -> tuple[float, float]:
    """A BCa bootstrap interval (scipy.stats.bootstrap), seeded; the percentile interval where BCa is
    undefined (e.g. a degenerate jackknife)."""
    from scipy import stats as sps  # here, not at the top: a training stage summarises with numpy alone

    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():  # BCa warns, then returns NaN, on degenerate samples: handled below
            warnings.simplefilter("ignore")
            ci = sps.bootstrap(
                samples,
                statistic,
                n_resamples=RESAMPLES,
                confidence_level=CONFIDENCE,
                method=method,
                vectorized=True,
                rng=np.random.default_rng(0),
            ).confidence_interval
        if math.isfinite(ci.low) and math.isfinite(ci.high):
            break
    return float(ci.low), float(ci.high)


def mean_ci(values: Sequence[float]) -> tuple[float, float] | None:
    """95% bootstrap confidence interval of the mean; None below 2 values; the value itself when all
    values are equal (nothing varies to resample)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size < 2:
        return None
    if np.all(a == a[0]):
        return float(a[0]), float(a[0])
    return _bootstrap((a,), lambda x, axis: np.mean(x, axis=axis))


def diff_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float] | None:
    """95% bootstrap confidence interval of mean(a) - mean(b), each sample resampled on its own."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return None
    if np.all(a == a[0]) and np.all(b == b[0]):
        return float(a[0] - b[0]), float(a[0] - b[0])
    return _bootstrap((a, b), lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis))


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Hedges' g of a against b: the difference of means over the pooled sample standard deviation,
    with the small-sample correction 1 - 3 / (4 (na + nb) - 9). None below 2 values each or when
    neither sample varies."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return None
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    if pooled == 0:
        return None
    return float((a.mean() - b.mean()) / pooled * (1 - 3 / (4 * (a.size + b.size) - 9)))


def summarise(values: Sequence[float]) -> Summary:
    """The summary of `values`; std is undefined (None), never 0, for fewer than 2 values."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return Summary(0, None, None, None, None)
    return Summary(
        int(a.size), float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else None, float(a.min()), float(a.max())
    )


def epoch_band(series: Sequence[Sequence[float]]) -> list[Summary]:
    """Per epoch (index), the summary over the series that reach it, of their finite values."""
    length = max((len(s) for s in series), default=0)
    return [summarise([s[e] for s in series if e < len(s) and math.isfinite(s[e])]) for e in range(length)]


def welch_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) for equal means of `a` and `b`.

    Both samples need n >= 2. When both have zero variance the t statistic is undefined: equal
    means give p = 1, different means p = 0 (the difference is exact, not noise)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"Welch's t-test needs at least 2 values per sample, got {a.size} and {b.size}")
    if a.var(ddof=1) == 0 and b.var(ddof=1) == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    from scipy import stats as sps

    with warnings.catch_warnings():  # identical values in one sample are exact here, not a precision loss
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(sps.ttest_ind(a, b, equal_var=False).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order: the i-th smallest p (0-based) is
    multiplied by (m - i), made non-decreasing and capped at 1. Reject where adjusted p <= alpha."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def rank_key(s: Summary) -> tuple:
    """Sort key, best first: higher mean, then more repeats, then smaller std; n == 0 last."""
    if s.mean is None:
        return (1, 0.0, 0, 0.0)
    return (0, -s.mean, -s.n, s.std if s.std is not None else math.inf)


def ranks(summaries: Mapping[str, Summary]) -> dict[str, int]:
    """Competition ranks (1, 2, 2, 4) by mean, best first; configurations with n == 0 share the last rank."""
    ordered = sorted(summaries, key=lambda k: rank_key(summaries[k]))
    out: dict[str, int] = {}
    previous = None
    for position, key in enumerate(ordered, start=1):
        mean = summaries[key].mean
        if previous is not None and mean == summaries[previous].mean:
            out[key] = out[previous]
        else:
            out[key] = position
        previous = key
    return out


def best_of(summaries: Mapping[str, Summary]) -> str | None:
    """The key with the highest mean (ties: more repeats, then smaller std), or None if none finished."""
    finished = [k for k, s in summaries.items() if s.n > 0]
    return min(finished, key=lambda k: rank_key(summaries[k])) if finished else None


def compare_to_best(samples: Mapping[str, Sequence[float]], best: str | None, alpha: float) -> dict[str, Comparison]:
    """For each configuration, whether it is statistically indistinguishable from `best`.

    Each configuration with n >= 2 is tested against the best with Welch's t-test; the p-values of
    these m comparisons are Holm-adjusted together, and a configuration is indistinguishable when
    its adjusted p-value exceeds `alpha`. Configurations with n < 2 cannot be tested."""
    out: dict[str, Comparison] = {}
    if best is None:  # nothing finished
        return {key: Comparison(UNTESTABLE) for key in samples}
    reference = samples[best]
    tested: dict[str, float] = {}
    for key, values in samples.items():
        if key == best:
            out[key] = Comparison(BEST)
        elif len(values) < 2:
            out[key] = Comparison(UNTESTABLE)
        elif len(reference) < 2:
            out[key] = Comparison(BEST_UNTESTABLE)
        else:
            tested[key] = welch_p(values, reference)
    keys = list(tested)
    for key, adjusted in zip(keys, holm([tested[k] for k in keys]), strict=True):
        values = samples[key]
        out[key] = Comparison(
            TIE if adjusted > alpha else WORSE,
            tested[key],
            adjusted,
            float(np.mean(values) - np.mean(reference)),
            diff_ci(values, reference),
            hedges_g(values, reference),
        )
    return out

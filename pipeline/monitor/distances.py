"""How far a window of requests lies from what the model was trained and evaluated on.

The population stability index (PSI) over the reference's deciles: the measure credit-risk
and model-monitoring teams read as < 0.1 stable, 0.1-0.25 a moderate shift, > 0.25 a shift
to act on. Bins come from the reference, so a window piling into one end of the range
scores high, and empty bins are smoothed so one missing bin does not make it infinite.
"""

from __future__ import annotations

import numpy as np

BINS = 10
EPSILON = 1e-4  # the share an empty bin counts as


def quantile_edges(reference: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Inner bin edges at the reference's quantiles, repeated values merged (a reference of
    one value has one edge: the value, and bins below, at and above it)."""
    reference = np.asarray(reference, float)
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    if len(edges) <= 1:
        value = float(np.median(reference))
        return np.array([value - 1e-9, value + 1e-9])
    return edges


def shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, np.asarray(values, float), side="right"),
                         minlength=len(edges) + 1)
    return counts / max(counts.sum(), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """PSI of two distributions over the same bins: sum (a - e) ln(a / e)."""
    e = np.maximum(np.asarray(expected, float), EPSILON)
    a = np.maximum(np.asarray(actual, float), EPSILON)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def psi_of_samples(reference: np.ndarray, window: np.ndarray) -> float:
    """PSI of the window's values against the reference's, over the reference's deciles."""
    edges = quantile_edges(reference)
    return psi(shares(reference, edges), shares(window, edges))


def histogram_quantile_edges(counts: np.ndarray, upper: np.ndarray,
                             bins: int = BINS) -> np.ndarray:
    """Decile edges of a distribution given as counts per bin with upper edges `upper`
    (the evaluation fold's scores, as the Evaluator's curve holds them)."""
    cumulative = np.cumsum(counts) / max(np.sum(counts), 1)
    targets = np.linspace(0, 1, bins + 1)[1:-1]
    return np.unique(upper[np.minimum(np.searchsorted(cumulative, targets), len(upper) - 1)])


def regroup(counts: np.ndarray, upper: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per fine bin (upper edges `upper`) summed into the bins `edges` cut."""
    groups = np.searchsorted(edges, upper, side="left")
    out = np.bincount(groups, weights=counts, minlength=len(edges) + 1)
    return out / max(out.sum(), 1)

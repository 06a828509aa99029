"""The synthetic population: who has a lesion where, how malignancy depends on age, and the
AUC an ideal classifier reaches on it (the numbers `medtfx data synth` and docs/data.md quote).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from modules import features as F

if TYPE_CHECKING:
    from pipeline.data.synth import SynthSpec

SITE_SHARES = (0.51, 0.25, 0.15, 0.056, 0.011, 0.004)  # torso ... oral/genital; rest missing
AGES = np.arange(0, 95, 5)
AGE_LOGIT_SLOPE = 0.04  # per year: malignancy odds rise ~1.5x per decade


def site_probs() -> np.ndarray:
    shares = np.array(SITE_SHARES + (1 - sum(SITE_SHARES),))
    return shares / shares.sum()  # last entry: missing (-1)


def age_probs() -> np.ndarray:
    weights = np.exp(-0.5 * ((AGES - 50) / 15.0) ** 2)
    return weights / weights.sum()


def age_intercept(share: float) -> float:
    """The logit intercept that makes the mean malignant probability equal `share`."""
    lo, hi = -20.0, 20.0
    probs = age_probs()
    for _ in range(100):
        mid = (lo + hi) / 2
        mean = float(np.sum(probs / (1 + np.exp(-(mid + AGE_LOGIT_SLOPE * (AGES - 50))))))
        lo, hi = (mid, hi) if mean < share else (lo, mid)
    return (lo + hi) / 2


def malignant_prob(age: int, intercept: float) -> float:
    # Missing age: the population's mean risk; the model cannot know more.
    effective_age = 50 if age == F.MISSING else age
    return 1 / (1 + math.exp(-(intercept + AGE_LOGIT_SLOPE * (effective_age - 50))))


def best_auc(spec: SynthSpec) -> dict:
    """The AUC an ideal classifier reaches against the stored (noisy) labels."""
    shares = site_probs()
    site_codes = list(range(len(F.SITES))) + [F.MISSING]
    noisy = lambda auc: 0.5 + (1 - spec.label_noise) * (auc - 0.5)  # noqa: E731
    separation = {s: 2 * spec.signal * spec.site_strength(s) for s in site_codes}
    per_site = {s: _phi(separation[s] / math.sqrt(2)) for s in site_codes}
    # Sites are independent of the clean label, so positives spread over sites like all images.
    image_only = sum(p * per_site[s] for s, p in zip(site_codes, shares))
    return {
        "image": round(float(noisy(image_only)), 4),
        "image_and_metadata": round(noisy(_auc_with_metadata(spec, separation)), 4),
        "per_site": {(F.SITES[s] if s >= 0 else "missing"): round(noisy(per_site[s]), 4)
                     for s in site_codes},
    }


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def _auc_with_metadata(spec: SynthSpec, separation: dict[int, float]) -> float:
    """AUC of the exact posterior given the image evidence, age and site, on a fine grid."""
    intercept = age_intercept(spec.malignant_share)
    edges = np.linspace(-8, 8 + max(separation.values()), 4001)
    mids = (edges[:-1] + edges[1:]) / 2
    cdf = np.vectorize(_phi)
    neg_mass = np.diff(cdf(edges))
    scores, pos, neg = [], [], []
    site_codes = list(range(len(F.SITES))) + [F.MISSING]
    for age, p_age in zip(AGES, age_probs()):
        prior = malignant_prob(int(age), intercept)
        for site, p_site in zip(site_codes, site_probs()):
            delta = separation[site]
            pos_mass = np.diff(cdf(edges - delta))
            like_pos = np.exp(-0.5 * (mids - delta) ** 2)
            like_neg = np.exp(-0.5 * mids ** 2)
            scores.append(prior * like_pos / (prior * like_pos + (1 - prior) * like_neg))
            pos.append(p_age * p_site * prior * pos_mass)
            neg.append(p_age * p_site * (1 - prior) * neg_mass)
    return _weighted_auc(np.concatenate(scores), np.concatenate(pos), np.concatenate(neg))


def _weighted_auc(scores: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> float:
    # Equal scores (a site without signal scores all its images alike) count half.
    unique, inverse = np.unique(scores, return_inverse=True)
    pos = np.bincount(inverse, weights=pos, minlength=len(unique))
    neg = np.bincount(inverse, weights=neg, minlength=len(unique))
    neg_below = np.cumsum(neg) - neg
    return float(np.sum(pos * (neg_below + 0.5 * neg)) / (pos.sum() * neg.sum()))

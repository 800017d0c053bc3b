"""Estimates with intervals from a sample's own variance: what the planner predicts with.

- ``regression_total``: a corpus total of y (calls, tokens) from a sample of
  its documents, y ~ x·b with x the document's units (chunks, image blocks,
  ...) known for every document from the scan. The total is the sample's
  own y plus b·x summed over the documents not sampled; its interval is the
  least-squares prediction interval of that sum (the fit's uncertainty plus
  the spread of the unsampled documents around it, t quantile).
- ``power_law_total``: y at a larger x from y = a·x^b fitted in log space on
  a growth curve (summary calls as the graph grows), with the fit's
  prediction interval.

Every ``Estimate`` is a prediction and says so; ``lo``/``hi`` are None where
the sample cannot give an interval (too few documents for the fit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import numpy as np

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """A predicted value with its 95% interval (None: the sample gives none) and how it was made."""

    value: float
    lo: Optional[float]
    hi: Optional[float]
    how: str

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    def scaled(self, factor: float) -> "Estimate":
        return Estimate(self.value * factor, _mul(self.lo, factor), _mul(self.hi, factor), self.how)

    def to_dict(self) -> Dict[str, Any]:
        return {"prediction": self.value, "lo": self.lo, "hi": self.hi, "how": self.how}

    def __str__(self) -> str:
        if not self.has_interval:
            return f"{self.value:,.4g} (no interval)"
        return f"{self.value:,.4g} [{self.lo:,.4g}, {self.hi:,.4g}]"


def _mul(value: Optional[float], factor: float) -> Optional[float]:
    return None if value is None else value * factor


def exact(value: float, how: str) -> Estimate:
    """A figure the sample measured outright (no unsampled part to predict)."""
    return Estimate(float(value), float(value), float(value), how)


def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.5 + LEVEL / 2, df))


def regression_total(y: Sequence[float], x_sample: np.ndarray, x_rest_total: np.ndarray, n_rest: int, how: str,
                     seen: Optional[float] = None) -> Estimate:
    """The corpus total of y: ``seen`` + b·x_rest_total, b from y ~ x (no intercept, b >= 0).

    ``x_sample``: one row per sampled document; ``x_rest_total``: the units
    summed over the ``n_rest`` documents not sampled; ``seen``: what the
    sampled documents of the corpus measured (default: all of ``y``).
    """
    from scipy.optimize import nnls

    y = np.asarray(y, dtype=float)
    x = np.asarray(x_sample, dtype=float).reshape(len(y), -1)
    rest = np.asarray(x_rest_total, dtype=float).reshape(-1)
    seen = float(y.sum()) if seen is None else float(seen)
    if n_rest == 0:
        return exact(seen, how)
    used = x.any(axis=0)  # a unit the sample never saw has no coefficient to fit
    if not used.any():
        return Estimate(seen, None, None, how + "; the sample has none of its units")
    coefficients, _ = nnls(x[:, used], y)
    value = seen + float(coefficients @ rest[used])
    dof = len(y) - int(used.sum())
    if dof < 1:
        return Estimate(value, None, None, how)
    residuals = y - x[:, used] @ coefficients
    sigma2 = float(residuals @ residuals) / dof
    leverage = float(rest[used] @ np.linalg.pinv(x[:, used].T @ x[:, used]) @ rest[used])
    half = t_quantile(dof) * math.sqrt(sigma2 * (leverage + n_rest))
    unseen = ~used & (rest > 0)
    note = how + ("; units absent from the sample are not counted" if unseen.any() else "")
    return Estimate(value, max(seen, value - half), value + half, note)


def power_law_total(x: Sequence[float], y: Sequence[float], x_new: float, how: str) -> Estimate:
    """y at ``x_new`` from log y = log a + b log x on the points with y > 0 (at least 3 of them).

    The points of one growth curve are not independent (each includes the
    ones before), so the interval is on the narrow side.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = (x > 0) & (y > 0)
    if keep.sum() < 3:
        raise ValueError("a power law needs at least 3 points with y > 0")
    lx, ly = np.log(x[keep]), np.log(y[keep])
    design = np.column_stack([np.ones_like(lx), lx])
    coefficients, *_ = np.linalg.lstsq(design, ly, rcond=None)
    point = np.array([1.0, math.log(x_new)])
    value = math.exp(float(point @ coefficients))
    dof = len(lx) - 2
    if dof < 1:
        return Estimate(value, None, None, how)
    residuals = ly - design @ coefficients
    sigma2 = float(residuals @ residuals) / dof
    spread = t_quantile(dof) * math.sqrt(sigma2 * (1 + float(point @ np.linalg.pinv(design.T @ design) @ point)))
    return Estimate(value, value * math.exp(-spread), value * math.exp(spread), f"{how} (exponent {coefficients[1]:.2f})")


def add(estimates: Sequence[Estimate], how: str) -> Estimate:
    """A sum of estimates; its interval adds the half-widths (right whatever their correlation)."""
    value = sum(e.value for e in estimates)
    if not all(e.has_interval for e in estimates):
        return Estimate(value, None, None, how)
    return Estimate(value, sum(e.lo for e in estimates), sum(e.hi for e in estimates), how)

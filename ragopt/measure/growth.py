"""Growth curves: an amount (summary calls, where the answers name no graph keys for the merge model) as a run
ingests more of its sample.

``growth_points`` reads the curve off a run (the amount so far at each
document's completion, against the chunks ingested by then); ``growth_total``
extends it to a corpus's chunks with a power law fitted on it, or with the
sample's ratio and a Poisson interval where the curve has too few points or
is lumpy: when one step holds over half of its rise, the curve says when a
few large batches ran, not how the amount grows with the graph.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np
import pandas as pd

from ragopt.measure.estimators import Estimate, exact, power_law_total

LUMPY_STEP = 0.5  # a curve with one step over this share of its rise is read by its end point only


def poisson_ratio(count: float, x_sample: float, x_total: float, how: str) -> Estimate:
    """count scaled by x_total / x_sample, with the exact Poisson interval of the count."""
    from scipy.stats import chi2

    scale = x_total / x_sample if x_sample else 0.0
    lo = 0.0 if count == 0 else chi2.ppf(0.025, 2 * count) / 2
    hi = chi2.ppf(0.975, 2 * count + 2) / 2
    return Estimate(count * scale, lo * scale, hi * scale, how + " (sample's ratio per chunk, Poisson interval)")


def growth_points(run: Any, doc_units: Dict[str, float], times: pd.Series, amounts: pd.Series) -> Tuple[np.ndarray, np.ndarray]:
    """(units ingested, amount so far) at each completed document of ``run``, in completion order."""
    done = run.docs[run.docs["status"] == "ok"].sort_values("done_s")
    x = np.cumsum([doc_units.get(str(f), 0.0) for f in done["file"]])
    order = np.argsort(times.to_numpy())
    t, cumulative = times.to_numpy()[order], np.cumsum(amounts.to_numpy(dtype=float)[order])
    y = np.array([cumulative[np.searchsorted(t, d, side="right") - 1] if np.searchsorted(t, d, side="right") else 0.0
                  for d in done["done_s"]])
    return x, y


def growth_total(x: np.ndarray, y: np.ndarray, x_total: float, how: str) -> Estimate:
    """The amount at ``x_total`` units: the power law of the growth curve, or the sample's ratio."""
    x_sample, y_sample = (float(x[-1]), float(y[-1])) if len(x) else (0.0, 0.0)
    if x_total <= x_sample:  # within the sample's own curve: what it measured there
        return exact(float(np.interp(x_total, x, y)) if len(x) else 0.0, how + " (measured on the sample's growth curve)")
    steps = np.diff(y, prepend=0.0)
    if y_sample > 0 and steps.max() > LUMPY_STEP * y_sample:
        return poisson_ratio(y_sample, x_sample, x_total, how + "; its growth curve is lumpy (batches), so by its end point")
    try:
        return power_law_total(x, y, x_total, how + " as the graph grows (power law of the sample's growth curve)")
    except ValueError:
        return poisson_ratio(y_sample, x_sample, x_total, how)

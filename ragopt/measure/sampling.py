"""A stratified sample of a scanned corpus: by format and by size, so the sample holds the corpus's mix.

Strata are (format, size class), size classes being the terciles of the
corpus's text tokens. Each stratum gets its proportional share of the sample
(largest remainders), at least one document while the sample has room for
one per stratum, and its documents are drawn at random with a fixed seed. A
stratum the floor already lifted to its share gets no more: the planner's
merge model reads the sample as a simple random draw of documents, and
over-drawn formats would fake key recurrence. Default size: 10% of the
corpus or 10 documents, whichever is larger (all of a corpus of 10 or
fewer).
"""

from __future__ import annotations

import math
import random
from typing import List, Optional

import pandas as pd

MIN_SAMPLE = 10
SAMPLE_FRACTION = 0.10


def sample_size(n_docs: int, requested: Optional[int] = None) -> int:
    """``requested`` (at most the corpus), else max(10% of the corpus, 10)."""
    wanted = requested if requested is not None else max(math.ceil(SAMPLE_FRACTION * n_docs), MIN_SAMPLE)
    return max(0, min(n_docs, wanted))


def strata(scan: pd.DataFrame) -> pd.Series:
    """Each document's stratum: its format and the tercile of its text tokens ("small", "medium", "large")."""
    tokens = scan["text_tokens"].rank(method="first", pct=True)
    size = pd.cut(tokens, [0, 1 / 3, 2 / 3, 1], labels=["small", "medium", "large"], include_lowest=True)
    return scan["format"].astype(str) + "/" + size.astype(str)


def stratified_sample(scan: pd.DataFrame, n: Optional[int] = None, seed: int = 0) -> List[str]:
    """The files of a stratified sample of ``scan``'s documents (parse failures left out), in scan order."""
    usable = scan[scan["error"].isna()].reset_index(drop=True)
    size = sample_size(len(usable), n)
    groups = {name: list(group.index) for name, group in usable.groupby(strata(usable), sort=True)}
    share = {name: size * len(rows) / len(usable) for name, rows in groups.items()} if len(usable) else {}
    take = {name: int(share[name]) for name in groups}
    if size >= len(groups):  # room for one per stratum: no stratum goes unseen
        take = {name: max(1, count) for name, count in take.items()}
    left = size - sum(take.values())
    while left > 0:  # the stratum furthest below its share first (a floor of one already counts); never larger than the corpus
        name = max((g for g in groups if take[g] < len(groups[g])), key=lambda g: share[g] - take[g])
        take[name] += 1
        left -= 1
    while sum(take.values()) > size:  # the one-per-stratum floor overshot: trim the largest strata
        largest = max(take, key=take.get)
        take[largest] -= 1
    rng = random.Random(f"plan-sample:{seed}")
    chosen = sorted(i for name, rows in groups.items() for i in rng.sample(rows, min(take[name], len(rows))))
    return list(usable.loc[chosen, "file"])

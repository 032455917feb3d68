"""Time a call: warm-up, then repeat until enough samples or the time budget is spent.

>>> t = time_call(lambda: sum(range(100)), reps=50)
>>> t.reps >= 5 and t.median_s > 0
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``reps`` timed calls (after warm-up)."""

    median_s: float
    p99_s: float
    mean_s: float
    min_s: float
    reps: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def time_samples(fn: Callable[[], Any], reps: int = 200, warmup: int = 5, budget_s: float = 1.0,
                 min_reps: int = 5) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then up to ``reps`` timed calls within ``budget_s``;
    return the seconds of each timed call.  At least ``min_reps`` calls are timed whatever the budget."""
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    clock = time.perf_counter
    deadline = clock() + budget_s
    while len(samples) < reps:
        start = clock()
        fn()
        end = clock()
        samples.append(end - start)
        if end > deadline and len(samples) >= min_reps:
            break
    return samples


def summarize(samples: list[float]) -> Timing:
    """Median, p99, mean and minimum of per-call seconds."""
    ordered = sorted(samples)
    n = len(ordered)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return Timing(median_s=median, p99_s=percentile(ordered, 99), mean_s=sum(ordered) / n, min_s=ordered[0], reps=n)


def time_call(fn: Callable[[], Any], reps: int = 200, warmup: int = 5, budget_s: float = 1.0,
              min_reps: int = 5) -> Timing:
    """:func:`time_samples` summarized as a :class:`Timing`."""
    return summarize(time_samples(fn, reps, warmup, budget_s, min_reps))

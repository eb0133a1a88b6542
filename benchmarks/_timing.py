"""Timing shared by the benchmark scripts (run them as `python benchmarks/<name>.py`, which puts this folder on the
import path)."""
from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int) -> float:
    """Median wall time in seconds of ``repeats`` calls of ``fn()``, after one warm-up call."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)

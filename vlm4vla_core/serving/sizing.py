"""How many simulator workers one policy process serves (``eval_workers: auto``).

A worker alternates between its simulator and the policy: it steps the executed part of a chunk and
renders the next frame (``cycle_s``, measured on the bare simulator), then waits for the batch that holds
its request (``latency[b]`` seconds for a batch of ``b`` requests, measured on the policy). The server
fills each batch with every worker's request (:mod:`.server`), so N workers run in lockstep and give
``N / (cycle_s + latency(N))`` policy calls per second. The choice is the smallest N, up to ``cap`` (the
job's cores, its episodes, the server's ``max_batch``), whose rate reaches ``share`` of the best rate
under the cap: past it, added workers mostly queue at the policy. A policy that batches for free (a GPU
below its saturation) gets the cap; a policy whose time grows with the batch (a CPU) gets fewer.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

SHARE = 0.9


def latency_at(latency: dict[int, float], n: int) -> float:
    """Seconds of a batch of ``n`` requests: linear between the measured batch sizes, extended along the
    line through the last two of them beyond (flat when only one size was measured)."""
    if not latency:
        raise ValueError("latency: no batch size measured")
    sizes = sorted(latency)
    times = [latency[s] for s in sizes]
    if n <= sizes[-1] or len(sizes) == 1:
        return float(np.interp(n, sizes, times))
    slope = (times[-1] - times[-2]) / (sizes[-1] - sizes[-2])
    return times[-1] + slope * (n - sizes[-1])


def choose_workers(latency: dict[int, float], cycle_s: float, cap: int, share: float = SHARE) -> dict:
    """The worker count and the model behind it: ``workers``, the predicted ``rates`` (policy calls/s by
    worker count) and each count's ``sim_busy`` share (the time a worker steps rather than waits)."""
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    if cycle_s < 0 or any(t < 0 for t in latency.values()):
        raise ValueError(f"times must be >= 0 (cycle_s {cycle_s}, latency {latency})")
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    rates, busy = {}, {}
    for n in range(1, cap + 1):
        period = cycle_s + latency_at(latency, n)
        rates[n] = n / period if period > 0 else float(n)
        busy[n] = cycle_s / period if period > 0 else 1.0
    best = max(rates.values())
    workers = min(n for n, r in rates.items() if r >= share * best)
    return dict(workers=workers, cap=cap, share=share, cycle_ms=round(1000 * cycle_s, 2),
                latency_ms={int(b): round(1000 * t, 2) for b, t in sorted(latency.items())},
                rates={n: round(r, 3) for n, r in rates.items()}, sim_busy=round(busy[workers], 3))


def measure_latency(infer_batch, request: dict, sizes: list[int], repeats: int = 3) -> dict[int, float]:
    """Median seconds of ``infer_batch`` on ``b`` copies of ``request``, for each ``b`` of ``sizes``
    (one untimed call first: lazy initialisation is not latency)."""
    infer_batch([request])
    out = {}
    for b in sizes:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            infer_batch([request] * b)
            times.append(time.perf_counter() - start)
        out[b] = statistics.median(times)
    return out


def batch_sizes(cap: int) -> list[int]:
    """The batch sizes measured for a cap: 1, 2, 4, ... and the cap itself."""
    sizes, b = [], 1
    while b < cap:
        sizes.append(b)
        b *= 2
    return sorted({*sizes, cap})

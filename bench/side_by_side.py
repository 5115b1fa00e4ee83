"""Two ways of doing the same work, timed side by side for the benches: their order alternates every round (the
machine's drift then falls on both), wall and process CPU time are kept, medians and ratios printed."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def alternating_times(runners: dict[str, Callable[[], object]], repeats: int,
                      per: int = 1) -> dict[tuple[str, str], list[float]]:
    """{(name, "wall" | "cpu"): seconds of each round / per} for each runner, run `repeats` times."""
    times = {(name, clock): [] for name in runners for clock in ("wall", "cpu")}
    for r in range(repeats):
        for name in (list(runners) if r % 2 == 0 else list(reversed(runners))):
            wall, cpu = time.perf_counter(), time.process_time()
            runners[name]()
            times[name, "wall"].append((time.perf_counter() - wall) / per)
            times[name, "cpu"].append((time.process_time() - cpu) / per)
    return times


def print_times(times: dict[tuple[str, str], list[float]], unit: str, ours: str, theirs: str, label: str) -> None:
    """Each runner's median and minimum per clock, then ours / theirs (the benches' target: <= 1.03)."""
    width = max(len(name) for name, _ in times)
    for (name, clock), ts in times.items():
        listed = ", ".join(f"{t:.2f}" for t in ts)
        print(f"{name:>{width}} {clock:>4}: median {statistics.median(ts):.3f} {unit}, min {min(ts):.3f}  ({listed})")
    for clock in ("wall", "cpu"):
        ours_t, theirs_t = times[ours, clock], times[theirs, clock]
        print(f"ratio {label} ({clock}): median {statistics.median(ours_t) / statistics.median(theirs_t):.4f}, "
              f"min {min(ours_t) / min(theirs_t):.4f} (target <= 1.03)")

"""What the tuner reports: ``status.performance`` (Performance) from a finished search, its compact summary for
the termination message, and the curve printed at the end (every configuration at every load it was measured at).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import platform
from pathlib import Path

from modelservice.api.tuning import LatencyFigures, LatencyTarget, Performance, Trial, TunedConfig
from modelservice.tune.profile import ProfileError
from modelservice.tune.search import Candidate, Measurement, Outcome, Point

SUMMARY_LIMIT = 4096
MAX_LISTED_TRIALS = 64  # status.performance.trials lists every measurement up to this many


def target_text(target: LatencyTarget) -> str:
    return f"{target.percentile} <= {target.milliseconds:g} ms"


def point_text(point: Point, target: LatencyTarget) -> str:
    m = point.measurement
    verdict = "meets" if point.meets else ("errors" if m.errors else "misses")
    return f"{m.throughput:8.1f}/s  p50 {m.p50:7.2f}  p95 {m.p95:7.2f}  p99 {m.p99:7.2f} ms  {verdict}"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def tuned_config(candidate: Candidate) -> TunedConfig:
    return TunedConfig(
        max_batch_size=candidate.max_batch_size,
        dynamic_batching=candidate.max_queue_delay_microseconds is not None,
        max_queue_delay_microseconds=candidate.max_queue_delay_microseconds or 0,
        preferred_batch_sizes=list(candidate.preferred_batch_sizes),
        instances=candidate.instances,
    )


def _figures(m: Measurement) -> LatencyFigures:
    return LatencyFigures(p50=round(m.p50, 3), p95=round(m.p95, 3), p99=round(m.p99, 3))


def performance(
    outcome: Outcome, target: LatencyTarget, cold: float | None, seconds: float, measured_on: str
) -> Performance:
    """status.performance from a finished search."""
    winner = outcome.winner
    if winner is None:
        raise ProfileError("the search measured nothing (maxSeconds too small?)")
    trials = [
        Trial(
            config=tuned_config(p.candidate),
            concurrency=p.concurrency,
            throughput=round(p.measurement.throughput, 2),
            latency_ms=_figures(p.measurement),
            meets_target=p.meets,
        )
        for p in outcome.points
    ]
    default = outcome.default
    return Performance(
        config=tuned_config(winner.candidate),
        throughput_per_replica=round(winner.measurement.throughput, 2),
        latency_ms=_figures(winner.measurement),
        concurrency=winner.concurrency,
        target=target_text(target),
        target_met=winner.meets,
        default_throughput=round(default.measurement.throughput, 2) if default and default.meets else 0.0,
        trials=trials if len(trials) <= MAX_LISTED_TRIALS else None,
        trial_count=outcome.trials,
        cold_start_seconds=round(cold, 2) if cold is not None else None,
        measured_on=measured_on,
        measured_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        tuning_seconds=round(seconds, 1),
    )


def summary(perf: Performance) -> str:
    """The compact JSON of the termination message: no trials, at most SUMMARY_LIMIT bytes."""
    data = perf.model_copy(update={"trials": None}).to_api()
    text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    if len(text.encode()) > SUMMARY_LIMIT:
        data.pop("measuredOn", None)
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return text


def curve(outcome: Outcome, target: LatencyTarget) -> str:
    """The measured curve as a table: every configuration (in the order tried) at every load it was measured
    at; ``*`` marks the kept measurement, ``default`` the spec's own configuration."""
    default = outcome.points[0].candidate if outcome.points else None
    rows = [
        f"{'config':34} {'c':>4} {'infer/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'windows':>7}  {target.percentile} <= "
        + f"{target.milliseconds:g} ms"
    ]
    for p in outcome.points:
        mark = "*" if outcome.winner is not None and p == outcome.winner else " "
        name = p.candidate.describe() + (" (default)" if p.candidate == default else "")
        m = p.measurement
        meets = "yes" if p.meets else ("errors" if m.errors else "no")
        figures = f"{m.throughput:9.1f} {m.p50:8.2f} {m.p99:8.2f} {p.windows:>7}"
        rows.append(f"{mark}{name:33} {p.concurrency:>4} {figures}  {meets}")
    return "\n".join(rows)


def verdict(perf: Performance, outcome: Outcome) -> str:
    """One line: the winner, and how it compares with the spec's own configuration."""
    winner = outcome.winner
    assert winner is not None
    config = winner.candidate.describe()
    at = f"{perf.throughput_per_replica:.1f}/s at c={perf.concurrency}, p99 {perf.latency_ms.p99:.2f} ms"
    if not perf.target_met:
        return f"no configuration met {perf.target}; lowest latency: {config} ({at})"
    if outcome.default is not None and winner.candidate == outcome.default.candidate:
        return f"the default is already best: {config} ({at}, {perf.target})" + (
            f"; {outcome.confirmation}" if outcome.confirmation else ""
        )
    if not perf.default_throughput:
        return f"tuned: {config} ({at}); the default met {perf.target} at no load measured"
    ratio = perf.throughput_per_replica / perf.default_throughput
    line = f"tuned: {config} ({at}): {ratio:.2f}x the default's {perf.default_throughput:.1f}/s within {perf.target}"
    return line + (f"; {outcome.confirmation}" if outcome.confirmation else "")

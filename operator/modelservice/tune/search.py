"""The tuner's search, pure: which configurations, in what order, when it stops, and which one it keeps.

No Triton here: ``Search`` is a state machine fed measurements, so the tests replay recorded tables.

    search = Search(space_for(ms), target, concurrency=[1, 8, 32], max_trials=24, max_seconds=300)
    while (probe := search.next_probe(elapsed)) is not None:
        search.record(probe, measure(probe.candidate, probe.concurrency))
    outcome = search.outcome()

Order (a coordinate search from the spec's own configuration):
1. the spec's configuration (the default), always first;
2. maxBatchSize, then the dynamic batching queue delay, then the instance count: each dimension is swept from
   the best configuration so far, outward from its value (the smaller values nearest first, then the larger
   ones nearest first), one dimension at a time;
3. a direction stops when it stops paying: ``patience`` (2) configurations in a row that do not beat the best
   so far by ``min_gain`` (5 %).

Each configuration is measured at the concurrency levels in ascending order and its ladder stops at the first
level that misses the latency target (more load only adds latency). A configuration is one trial (maxTrials
counts configurations); no configuration starts once ``max_seconds`` would be passed (judged from the mean
time of a measurement so far), and no measurement starts once it would pass.

The choice: among all measurements (configuration x concurrency) whose percentile is within the target, the
highest throughput; throughputs within ``tie`` (2 %) of the highest are ties, settled by the smaller
maxBatchSize, then fewer instances, then the smaller queue delay. When none is within the target: the
measurement with the lowest percentile latency, ``target_met`` false.

The confirmation: one window is noisy on a shared machine, so when the choice is not the default, both are
measured again in turn (winner, default, default, winner) at their kept loads, time permitting; the windows of a
configuration and load are pooled (medians), and the winner must still beat the default by ``min_gain`` or the default
is kept (medians of the windows; within the target by throughput, else by latency). These re-measurements
are not trials.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from modelservice.api.models import ModelService
from modelservice.api.tuning import LatencyTarget, Tuning

DEFAULT_QUEUE_DELAYS = (0, 100, 1000, 5000)
DEFAULT_INSTANCES = (1, 2)
MIN_GAIN = 0.05
PATIENCE = 2
TIE = 0.02

Dimension = Literal["max_batch_size", "max_queue_delay_microseconds", "instances"]
DIMENSIONS: tuple[Dimension, ...] = ("max_batch_size", "max_queue_delay_microseconds", "instances")


@dataclass(frozen=True, order=True)
class Candidate:
    """One Triton configuration. ``max_queue_delay_microseconds`` None: dynamic batching off."""

    max_batch_size: int
    max_queue_delay_microseconds: int | None
    instances: int
    preferred_batch_sizes: tuple[int, ...] = ()

    @property
    def tie_key(self) -> tuple[int, int, int]:
        """Ties go to the smaller batch, then fewer instances, then the smaller delay (off counts as none)."""
        return (self.max_batch_size, self.instances, self.max_queue_delay_microseconds or 0)

    def describe(self) -> str:
        delay = "off" if self.max_queue_delay_microseconds is None else f"{self.max_queue_delay_microseconds}us"
        return f"batch {self.max_batch_size} delay {delay} x{self.instances}"


@dataclass(frozen=True)
class Space:
    """The values each dimension may take, and the spec's own configuration."""

    default: Candidate
    batch_sizes: tuple[int, ...]
    queue_delays: tuple[int | None, ...]
    instances: tuple[int, ...]

    def values(self, dimension: Dimension) -> tuple[int | None, ...]:
        if dimension == "max_batch_size":
            return self.batch_sizes
        if dimension == "max_queue_delay_microseconds":
            return self.queue_delays
        return self.instances

    def candidate(self, base: Candidate, dimension: Dimension, value: int | None) -> Candidate:
        if dimension == "max_queue_delay_microseconds":
            changed = replace(base, max_queue_delay_microseconds=value)
        elif dimension == "max_batch_size":
            changed = replace(base, max_batch_size=_rank(value))
        else:
            changed = replace(base, instances=_rank(value))
        preferred = tuple(size for size in self.default.preferred_batch_sizes if size <= changed.max_batch_size)
        if changed.max_queue_delay_microseconds is None or changed.max_batch_size == 0:
            preferred = ()
        return replace(changed, preferred_batch_sizes=preferred)


def powers_of_two(limit: int) -> list[int]:
    """1, 2, 4, ... up to ``limit``, and ``limit`` itself."""
    values = [1 << shift for shift in range(limit.bit_length()) if 1 << shift <= limit]
    return sorted({*values, limit}) if limit > 0 else []


def _with(values: Sequence[int | None], own: int | None) -> tuple[int | None, ...]:
    return tuple(sorted({*values, own}, key=_rank))


def space_for(ms: ModelService, tuning: Tuning | None = None) -> Space:
    """The search space of a ModelService: the Tuning's lists, else values derived from the model (powers of
    two up to maxBatchSize; queue delays 0, 100, 1000, 5000 us; 1 and 2 instances), each with the spec's own.
    An unbatched model (maxBatchSize 0) only tunes its instance count."""
    serving = ms.spec.serving
    tuning = tuning or serving.tuning
    batching = serving.dynamic_batching
    own_delay = batching.max_queue_delay_microseconds if batching is not None else None
    preferred = tuple(batching.preferred_batch_sizes) if batching is not None else ()
    if serving.max_batch_size == 0:
        default = Candidate(0, None, serving.instances)
        return Space(
            default, (0,), (None,), tuple(sorted({*(tuning.instances or DEFAULT_INSTANCES), default.instances}))
        )
    default = Candidate(
        serving.max_batch_size, own_delay, serving.instances, preferred if own_delay is not None else ()
    )
    batch_sizes = tuning.batch_sizes or powers_of_two(serving.max_batch_size)
    delays: Sequence[int | None] = tuning.queue_delays_microseconds or DEFAULT_QUEUE_DELAYS
    instances = tuning.instances or DEFAULT_INSTANCES
    return Space(
        default,
        tuple(sorted({*batch_sizes, default.max_batch_size})),
        _with(delays, own_delay),
        tuple(sorted({*instances, default.instances})),
    )


# --------------------------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class Measurement:
    """One configuration at one concurrency: inferences per second and latency percentiles in milliseconds."""

    throughput: float
    p50: float
    p95: float
    p99: float
    errors: int = 0

    def percentile(self, name: Literal["p95", "p99"]) -> float:
        return self.p99 if name == "p99" else self.p95


@dataclass(frozen=True)
class Probe:
    """What to measure next."""

    candidate: Candidate
    concurrency: int
    trial: int  # 1-based number of the configuration


@dataclass(frozen=True)
class Point:
    candidate: Candidate
    concurrency: int
    measurement: Measurement
    meets: bool
    windows: int = 1  # measurements pooled into this one (the confirmation re-measures)


@dataclass(frozen=True)
class Score:
    """How good a configuration is: meets the target, and then its best throughput within it; otherwise its
    lowest latency (negated, so larger is better)."""

    meets: bool
    value: float

    def beats(self, other: Score | None, gain: float) -> bool:
        if other is None or self.meets != other.meets:
            return other is None or self.meets
        if self.meets:
            return self.value > other.value * (1 + gain)
        return -self.value < -other.value / (1 + gain)


def meets_target(measurement: Measurement, target: LatencyTarget) -> bool:
    return measurement.errors == 0 and measurement.percentile(target.percentile) <= target.milliseconds


def choose(points: Sequence[Point], target: LatencyTarget, tie: float = TIE) -> Point | None:
    """The kept measurement (see the module doc); None without measurements."""
    meeting = [p for p in points if p.meets]
    if meeting:
        best = max(p.measurement.throughput for p in meeting)
        near = [p for p in meeting if p.measurement.throughput >= best * (1 - tie)]
        return min(near, key=lambda p: (p.candidate.tie_key, -p.measurement.throughput))
    clean = [p for p in points if p.measurement.errors == 0] or list(points)
    if not clean:
        return None
    return min(clean, key=lambda p: (p.measurement.percentile(target.percentile), p.candidate.tie_key))


def point_score(point: Point, target: LatencyTarget) -> Score:
    if point.meets:
        return Score(True, point.measurement.throughput)
    return Score(False, -point.measurement.percentile(target.percentile))


def score(points: Sequence[Point], target: LatencyTarget) -> Score | None:
    chosen = choose(points, target, tie=0.0)
    return point_score(chosen, target) if chosen is not None else None


def pool(points: Sequence[Point], target: LatencyTarget) -> list[Point]:
    """One point per (configuration, concurrency), in the order first measured: of repeated windows the median
    of each figure (one window's latency spike does not decide), errors added up."""
    groups: dict[tuple[Candidate, int], list[Point]] = {}
    for point in points:
        groups.setdefault((point.candidate, point.concurrency), []).append(point)
    pooled = []
    for (candidate, concurrency), group in groups.items():
        if len(group) == 1:
            pooled.append(group[0])
            continue
        m = Measurement(
            statistics.median(p.measurement.throughput for p in group),
            statistics.median(p.measurement.p50 for p in group),
            statistics.median(p.measurement.p95 for p in group),
            statistics.median(p.measurement.p99 for p in group),
            sum(p.measurement.errors for p in group),
        )
        pooled.append(Point(candidate, concurrency, m, meets_target(m, target), len(group)))
    return pooled


# --------------------------------------------------------------------------------------------------- search


@dataclass
class Outcome:
    winner: Point | None
    default: Point | None  # the spec's configuration at its best under the target (or its lowest latency)
    points: list[Point]  # pooled: one per configuration and concurrency
    trials: int
    stopped: str  # why the search ended
    confirmation: str = ""  # what the re-measurement of the winner against the default found ("": none)


@dataclass
class Search:
    """The coordinate search as a state machine: ``next_probe`` -> measure -> ``record``, until None."""

    space: Space
    target: LatencyTarget
    concurrency: Sequence[int]
    max_trials: int
    max_seconds: float
    min_gain: float = MIN_GAIN
    patience: int = PATIENCE
    confirm: bool = True
    points: list[Point] = field(default_factory=list)
    stopped: str = ""
    phase: Literal["search", "confirm", "done"] = "search"
    log: list[str] = field(default_factory=list)  # what the search decided, for the progress output
    _current: Candidate | None = field(default=None, init=False)
    _levels: list[int] = field(default_factory=list, init=False)
    _tried: list[Candidate] = field(default_factory=list, init=False)
    _plan: Iterator[Candidate] | None = field(default=None, init=False)
    _measured_seconds: float = field(default=0.0, init=False)
    _queue: list[tuple[Candidate, int]] = field(default_factory=list, init=False)
    _confirmation: str = field(default="", init=False)
    _pair: list[tuple[Candidate, int]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.concurrency = sorted(set(self.concurrency))

    # -- the loop

    def next_probe(self, elapsed: float) -> Probe | None:
        """The next measurement, or None when the search is over (``stopped`` says why). ``elapsed``: seconds
        since the search started (including loading configurations)."""
        per_probe = self._measured_seconds / len(self.points) if self.points else 0.0
        if self.phase == "search":
            probe = self._search_probe(elapsed, per_probe)
            if probe is not None:
                return probe
            self._begin_confirmation()
        if self.phase == "confirm":
            return self._confirmation_probe(elapsed, per_probe)
        return None

    def _search_probe(self, elapsed: float, per_probe: float) -> Probe | None:
        if self._current is not None and self._levels:
            if elapsed + per_probe > self.max_seconds:
                return self._stop(f"maxSeconds ({self.max_seconds:g} s) reached")
            return Probe(self._current, self._levels[0], len(self._tried))
        self._current = None
        if len(self._tried) >= self.max_trials:
            return self._stop(f"maxTrials ({self.max_trials}) reached")
        if self._tried and elapsed + per_probe * len(self.concurrency) > self.max_seconds:
            return self._stop(f"maxSeconds ({self.max_seconds:g} s) would be passed")
        if self._plan is None:
            self._plan = self._candidates()
        candidate = next(self._plan, None)
        if candidate is None:
            return self._stop("every direction searched or stopped paying")
        self._current, self._levels = candidate, list(self.concurrency)
        self._tried.append(candidate)
        return Probe(candidate, self._levels[0], len(self._tried))

    def record(self, probe: Probe, measurement: Measurement, seconds: float = 0.0) -> Point:
        """The measurement of ``probe`` (which must be the last one handed out); ``seconds`` it took."""
        if probe.candidate != self._current or not self._levels or probe.concurrency != self._levels[0]:
            raise ValueError(f"record: {probe} is not the probe handed out last")
        point = Point(probe.candidate, probe.concurrency, measurement, meets_target(measurement, self.target))
        self.points.append(point)
        self._measured_seconds += seconds
        self._levels.pop(0)
        if self.phase == "confirm":
            self._queue.pop(0)
        if not point.meets:  # more load only adds latency: the rest of this ladder cannot meet the target
            self._levels.clear()
        return point

    def _stop(self, reason: str) -> Probe | None:
        self.stopped = reason
        self._current, self._levels = None, []
        return None

    # -- the confirmation: the winner and the default re-measured in turn (ABBA) at their kept loads

    def _begin_confirmation(self) -> None:
        self.phase = "confirm"
        pooled = pool(self.points, self.target)
        winner = choose(pooled, self.target)
        default = choose([p for p in pooled if p.candidate == self.space.default], self.target)
        if not self.confirm or winner is None or default is None or winner.candidate == default.candidate:
            return
        a, b = (winner.candidate, winner.concurrency), (default.candidate, default.concurrency)
        self._queue, self._pair = [a, b, b, a], [a, b]

    def _confirmation_probe(self, elapsed: float, per_probe: float) -> Probe | None:
        if not self._queue:
            self.phase = "done"
            return None
        if elapsed + per_probe > self.max_seconds:
            self._confirmation = f"not re-measured: maxSeconds ({self.max_seconds:g} s) reached"
            self._queue, self._current, self._levels, self.phase = [], None, [], "done"
            return None
        candidate, concurrency = self._queue[0]
        self._current, self._levels = candidate, [concurrency]
        return Probe(candidate, concurrency, self._tried.index(candidate) + 1)

    # -- the plan

    def points_of(self, candidate: Candidate) -> list[Point]:
        return [p for p in self.points if p.candidate == candidate]

    def best(self) -> Candidate:
        chosen = choose(pool(self.points, self.target), self.target)
        return chosen.candidate if chosen is not None else self.space.default

    def _candidates(self) -> Iterator[Candidate]:
        yield self.space.default
        for dimension in DIMENSIONS:
            base = self.best()
            values = self.space.values(dimension)
            own = getattr(base, dimension)
            below = sorted((v for v in values if _rank(v) < _rank(own)), key=_rank, reverse=True)
            above = sorted((v for v in values if _rank(v) > _rank(own)), key=_rank)
            for direction in (below, above):
                yield from self._direction(base, dimension, direction)

    def _direction(self, base: Candidate, dimension: Dimension, values: list[int | None]) -> Iterator[Candidate]:
        strikes = 0
        for value in values:
            candidate = self.space.candidate(base, dimension, value)
            if candidate in self._tried:
                continue
            before = score(self.points, self.target)
            yield candidate
            after = score(self.points_of(candidate), self.target)
            if after is not None and after.beats(before, self.min_gain):
                strikes = 0
                continue
            strikes += 1
            if strikes >= self.patience:
                skipped = values[values.index(value) + 1 :]
                if skipped:
                    self.log.append(f"{dimension}: stopped paying, skipping {', '.join(map(str, skipped))}")
                return

    def outcome(self) -> Outcome:
        """What the search found. After a complete confirmation the decision is between the two re-measured
        configurations, on their pooled windows: the winner must still beat the default by ``min_gain``, else
        the default is kept (noise does not change a configuration)."""
        pooled = pool(self.points, self.target)
        winner = choose(pooled, self.target)
        default = choose([p for p in pooled if p.candidate == self.space.default], self.target)
        note = self._confirmation
        pair = [p for p in pooled if (p.candidate, p.concurrency) in self._pair and p.windows > 1]
        if len(self._pair) == 2 and len(pair) == 2 and not self._queue:
            tuned, default = sorted(pair, key=lambda p: p.candidate == self.space.default)
            won = point_score(tuned, self.target).beats(point_score(default, self.target), self.min_gain)
            if tuned.meets or default.meets:
                base = default.measurement.throughput
                versus = f"{tuned.measurement.throughput / base:.2f}x its throughput" if base else "the default misses"
            else:
                name = self.target.percentile
                versus = (
                    f"{name} {tuned.measurement.percentile(name):.1f} vs {default.measurement.percentile(name):.1f} ms"
                )
            kept = "kept" if won else f"not {self.min_gain:.0%} better: the default kept"
            note = f"re-measured against the default ({tuned.windows} windows each, medians): {versus}, {kept}"
            winner = tuned if won else default
        return Outcome(winner, default, pooled, len(self._tried), self.stopped, note)


def _rank(value: int | None) -> int:
    """Order with None (dynamic batching off) below every delay."""
    return -1 if value is None else value


def gain(outcome: Outcome) -> float:
    """The winner's throughput over the default's, both within the target (NaN when either is not)."""
    if outcome.winner is None or outcome.default is None or not outcome.default.meets or not outcome.winner.meets:
        return math.nan
    return outcome.winner.measurement.throughput / outcome.default.measurement.throughput

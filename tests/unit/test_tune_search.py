"""The tuner's search (modelservice.tune.search), pure: replayed on recorded measurement tables, no Triton.

A table maps (maxBatchSize, queue delay or None for dynamic batching off, instances) to {concurrency: (inferences
per second, p99 ms)}; p50 and p95 are derived from p99 unless a test needs them. Each measurement "takes" a fixed
number of seconds on a fake clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelservice.api.models import ModelService
from modelservice.api.tuning import LatencyTarget, Tuning
from modelservice.tune.search import (
    Candidate,
    Measurement,
    Point,
    Search,
    Space,
    choose,
    gain,
    powers_of_two,
    space_for,
)

Key = tuple[int, int | None, int]
Cell = tuple[float, float] | list[tuple[float, float]]
Table = dict[Key, dict[int, Cell]]

P99_50 = LatencyTarget(p99_milliseconds=50)


def service(serving: dict[str, Any] | None = None) -> ModelService:
    return ModelService.model_validate(
        {
            "apiVersion": "modelservice.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": "digits"},
            "spec": {
                "model": {
                    "uri": "file:///models/digits",
                    "format": "onnx",
                    "inputs": [{"name": "image", "dtype": "FP32", "shape": [1, 8, 8]}],
                    "outputs": [{"name": "logits", "dtype": "FP32", "shape": [10]}],
                },
                "serving": serving or {},
            },
        }
    )


def small_space(default: Key = (16, 100, 1)) -> Space:
    batch, delay, instances = default
    return Space(Candidate(batch, delay, instances), (4, 8, 16), (0, 100), (1, 2))


def replay(
    table: Table,
    space: Space,
    *,
    target: LatencyTarget = P99_50,
    concurrency: tuple[int, ...] = (1, 8, 32),
    max_trials: int = 24,
    max_seconds: float = 300,
    seconds: float = 1.0,
    errors: dict[Key, int] | None = None,
) -> tuple[Search, list[tuple[Key, int]]]:
    search = Search(space, target, concurrency, max_trials, max_seconds)
    order: list[tuple[Key, int]] = []
    elapsed = 0.0
    while (probe := search.next_probe(elapsed)) is not None:
        c = probe.candidate
        key = (c.max_batch_size, c.max_queue_delay_microseconds, c.instances)
        cell = table[key][probe.concurrency]
        if isinstance(cell, list):  # successive windows of the same cell (the confirmation re-measures)
            cell = cell[min(sum(1 for k in order if k == (key, probe.concurrency)), len(cell) - 1)]
        throughput, p99 = cell
        measured = Measurement(throughput, p99 / 2, p99 * 0.9, p99, (errors or {}).get(key, 0))
        search.record(probe, measured, seconds)
        elapsed += seconds
        order.append((key, probe.concurrency))
    return search, order


def configs(order: list[tuple[Key, int]]) -> list[Key]:
    seen: list[Key] = []
    for key, _ in order:
        if key not in seen:
            seen.append(key)
    return seen


def flat(throughput: float, p99: float = 10.0) -> dict[int, Cell]:
    """A configuration that meets a 50 ms target at every level with the same figures."""
    return {1: (throughput, p99), 8: (throughput, p99), 32: (throughput, p99)}


# A recorded-style table: batching pays up to 8 at c=32 (16 breaks the 50 ms p99), delay 0 beats 100,
# a second instance pays nothing.
RECORDED: Table = {
    (16, 100, 1): {1: (110.0, 12.0), 8: (260.0, 45.0), 32: (300.0, 140.0)},
    (8, 100, 1): {1: (112.0, 12.0), 8: (270.0, 41.0), 32: (290.0, 120.0)},
    (4, 100, 1): {1: (111.0, 12.0), 8: (230.0, 48.0), 32: (240.0, 150.0)},
    (8, 0, 1): {1: (118.0, 11.0), 8: (300.0, 38.0), 32: (305.0, 118.0)},
    (8, 0, 2): {1: (90.0, 15.0), 8: (280.0, 44.0), 32: (300.0, 119.0)},
}


# ---------------------------------------------------------------------------------------------- the space


def test_default_space_is_derived_from_max_batch_size() -> None:
    space = space_for(service({"maxBatchSize": 32}))
    assert space.default == Candidate(32, 100, 1)
    assert space.batch_sizes == (1, 2, 4, 8, 16, 32)
    assert space.queue_delays == (0, 100, 1000, 5000)
    assert space.instances == (1, 2)


def test_a_max_batch_size_off_the_powers_of_two_is_kept() -> None:
    assert powers_of_two(12) == [1, 2, 4, 8, 12]
    assert powers_of_two(1) == [1]
    assert space_for(service({"maxBatchSize": 12})).batch_sizes == (1, 2, 4, 8, 12)


def test_the_specs_own_values_join_the_tuning_lists() -> None:
    ms = service(
        {
            "maxBatchSize": 24,
            "instances": 3,
            "dynamicBatching": {"maxQueueDelayMicroseconds": 250, "preferredBatchSizes": [4, 16]},
            "tuning": {"batchSizes": [8], "queueDelaysMicroseconds": [0], "instances": [1]},
        }
    )
    space = space_for(ms)
    assert space.default == Candidate(24, 250, 3, (4, 16))
    assert space.batch_sizes == (8, 24)
    assert space.queue_delays == (0, 250)
    assert space.instances == (1, 3)
    # preferred sizes follow maxBatchSize down
    assert space.candidate(space.default, "max_batch_size", 8).preferred_batch_sizes == (4,)


def test_dynamic_batching_off_is_a_delay_value_below_zero() -> None:
    space = space_for(service({"maxBatchSize": 8, "dynamicBatching": None}))
    assert space.default == Candidate(8, None, 1)
    assert space.queue_delays == (None, 0, 100, 1000, 5000)


def test_an_unbatched_model_only_tunes_instances() -> None:
    space = space_for(service({"maxBatchSize": 0, "dynamicBatching": None}))
    assert (space.batch_sizes, space.queue_delays, space.instances) == ((0,), (None,), (1, 2))


def test_tuning_defaults() -> None:
    tuning = Tuning()
    assert (tuning.max_trials, tuning.max_seconds, tuning.concurrency) == (24, 300, [1, 8, 32])


# ---------------------------------------------------------------------------------------------- the order


def test_default_first_then_each_dimension_outward_from_the_best() -> None:
    table: Table = {
        (16, 100, 1): flat(100),
        (8, 100, 1): flat(120),  # pays: the base of the next dimensions
        (4, 100, 1): flat(110),  # does not pay
        (8, 0, 1): flat(110),
        (8, 100, 2): flat(119),
    }
    search, order = replay(table, small_space())
    assert configs(order) == [(16, 100, 1), (8, 100, 1), (4, 100, 1), (8, 0, 1), (8, 100, 2)]
    assert search.stopped == "every direction searched or stopped paying"
    # every configuration climbed the whole ladder (all met the target)
    assert order[:3] == [((16, 100, 1), 1), ((16, 100, 1), 8), ((16, 100, 1), 32)]


def test_values_below_come_first_nearest_first_then_those_above() -> None:
    space = Space(Candidate(8, 100, 1), (2, 4, 8, 16, 32), (100,), (1,))
    table: Table = {(b, 100, 1): flat(100 + b) for b in (2, 4, 8, 16, 32)}
    _, order = replay(table, space)
    assert [key[0] for key in configs(order)] == [8, 4, 2, 16, 32]


def test_the_ladder_stops_at_the_first_level_that_misses_the_target() -> None:
    table: Table = {(16, 100, 1): {1: (100.0, 20.0), 8: (200.0, 60.0), 32: (210.0, 150.0)}}
    space = Space(Candidate(16, 100, 1), (16,), (100,), (1,))
    search, order = replay(table, space)
    assert order == [((16, 100, 1), 1), ((16, 100, 1), 8)]
    assert [p.meets for p in search.points] == [True, False]


def test_a_direction_stops_after_two_steps_that_do_not_pay() -> None:
    space = Space(Candidate(64, 100, 1), (1, 2, 4, 8, 16, 32, 64), (100,), (1,))
    table: Table = {(b, 100, 1): flat(100.0 + b / 100) for b in (1, 2, 4, 8, 16, 32, 64)}
    search, order = replay(table, space)
    assert [key[0] for key in configs(order)] == [64, 32, 16]
    assert search.log == ["max_batch_size: stopped paying, skipping 8, 4, 2, 1"]


def test_a_step_that_pays_resets_the_strikes() -> None:
    space = Space(Candidate(64, 100, 1), (1, 2, 4, 8, 16, 32, 64), (100,), (1,))
    throughput = {64: 100.0, 32: 101.0, 16: 120.0, 8: 121.0, 4: 122.0, 2: 200.0, 1: 1.0}
    table: Table = {(b, 100, 1): flat(t) for b, t in throughput.items()}
    _, order = replay(table, space)
    assert [key[0] for key in configs(order)] == [64, 32, 16, 8, 4]


def test_no_configuration_is_measured_twice() -> None:
    space = Space(Candidate(8, 0, 1), (4, 8), (0, 100), (1, 2))
    table: Table = {(b, d, i): flat(100.0 + b + i) for b in (4, 8) for d in (0, 100) for i in (1, 2)}
    _, order = replay(table, space)
    seen = configs(order)
    assert len(seen) == len(set(seen))


# ---------------------------------------------------------------------------------------------- the bounds


def test_max_trials_counts_configurations() -> None:
    search, order = replay(RECORDED, small_space(), max_trials=2)
    assert configs(order) == [(16, 100, 1), (8, 100, 1)]
    assert search.stopped == "maxTrials (2) reached"
    assert search.outcome().trials == 2


def test_max_seconds_stops_before_a_configuration_would_pass_it() -> None:
    # 3 levels x 10 s per configuration that climbs the whole ladder: a third one would end at 90 s > 70 s
    table: Table = {key: flat(100.0 + key[0]) for key in [(16, 100, 1), (8, 100, 1), (4, 100, 1)]}
    search, order = replay(table, small_space(), max_seconds=70, seconds=10.0)
    assert configs(order) == [(16, 100, 1), (8, 100, 1)]
    assert search.stopped == "maxSeconds (70 s) would be passed"


def test_max_seconds_cuts_a_ladder_short() -> None:
    table: Table = {(16, 100, 1): flat(100.0)}
    search, order = replay(table, small_space(), max_seconds=15, seconds=10.0)
    assert order == [((16, 100, 1), 1)]
    assert search.stopped == "maxSeconds (15 s) reached"


def test_the_recorded_table_keeps_the_best_within_the_target() -> None:
    search, order = replay(RECORDED, small_space())
    # batch: 16 -> 8 (pays at c=8), 4 (no); delay from (8, 100): 0 pays; instances from (8, 0): 2 does not
    assert configs(order) == [(16, 100, 1), (8, 100, 1), (4, 100, 1), (8, 0, 1), (8, 0, 2)]
    outcome = search.outcome()
    assert outcome.winner is not None and outcome.default is not None
    assert outcome.winner.candidate == Candidate(8, 0, 1)
    assert (outcome.winner.concurrency, outcome.winner.measurement.throughput) == (8, 300.0)
    assert (outcome.default.concurrency, outcome.default.measurement.throughput) == (8, 260.0)
    assert gain(outcome) == pytest.approx(300 / 260)
    meeting = [p.measurement.throughput for p in outcome.points if p.meets]
    assert outcome.winner.measurement.throughput == max(meeting)


# ---------------------------------------------------------------------------------------------- the choice


def point(candidate: Candidate, throughput: float, p99: float, concurrency: int = 8, p95: float | None = None) -> Point:
    measured = Measurement(throughput, p99 / 2, p95 if p95 is not None else p99, p99)
    return Point(candidate, concurrency, measured, p99 <= 50)


def test_ties_go_to_the_smaller_batch_then_fewer_instances_then_the_smaller_delay() -> None:
    a = point(Candidate(16, 0, 1), 100.0, 20)
    b = point(Candidate(8, 100, 2), 99.0, 20)  # within 2 %: a tie; smaller batch wins
    c = point(Candidate(8, 0, 2), 98.5, 20)  # also a tie; same batch and instances as b, smaller delay
    d = point(Candidate(8, 5000, 1), 98.2, 20)  # a tie too; fewer instances beats the delay
    assert choose([a, b], P99_50) == b
    assert choose([a, b, c], P99_50) == c
    assert choose([a, b, c, d], P99_50) == d
    assert choose([a, point(Candidate(8, 0, 1), 97.0, 20)], P99_50) == a  # 3 % less: not a tie


def test_throughput_above_the_target_does_not_count() -> None:
    fast = point(Candidate(32, 100, 1), 500.0, 80)
    slow = point(Candidate(8, 100, 1), 200.0, 40)
    assert choose([fast, slow], P99_50) == slow


def test_when_no_configuration_meets_the_target_the_lowest_latency_is_kept() -> None:
    table: Table = {
        (16, 100, 1): {1: (50.0, 90.0)},
        (8, 100, 1): {1: (45.0, 70.0)},
        (4, 100, 1): {1: (40.0, 80.0)},
        (8, 0, 1): {1: (44.0, 75.0)},
        (8, 100, 2): {1: (30.0, 71.0)},
    }
    search, order = replay(table, small_space())
    assert all(c == 1 for _, c in order)  # every ladder stopped at its first level
    outcome = search.outcome()
    assert outcome.winner is not None and not outcome.winner.meets
    assert outcome.winner.candidate == Candidate(8, 100, 1)
    assert gain(outcome) != gain(outcome)  # NaN: nothing to compare within the target


def test_a_p95_target_reads_p95() -> None:
    target = LatencyTarget(p95_milliseconds=30)
    a = Point(Candidate(16, 0, 1), 8, Measurement(300.0, 10, 35, 40), False)
    b = Point(Candidate(8, 0, 1), 8, Measurement(250.0, 10, 25, 90), True)
    assert choose([a, b], target) == b


def test_a_measurement_with_errors_never_meets_the_target() -> None:
    table = {**RECORDED, (8, 100, 2): flat(100.0)}
    search, _ = replay(table, small_space(), errors={(8, 0, 1): 3})
    outcome = search.outcome()
    assert outcome.winner is not None and outcome.winner.candidate != Candidate(8, 0, 1)
    assert all(not p.meets for p in outcome.points if p.candidate == Candidate(8, 0, 1))


def test_record_refuses_a_probe_it_did_not_hand_out() -> None:
    search = Search(small_space(), P99_50, (1, 8), 4, 60)
    probe = search.next_probe(0)
    assert probe is not None and probe.concurrency == 1
    with pytest.raises(ValueError):
        search.record(type(probe)(probe.candidate, 8, 1), Measurement(1, 1, 1, 1))


# ---------------------------------------------------------------------------------------------- the confirmation


def test_the_winner_and_the_default_are_re_measured_in_turn_at_their_kept_loads() -> None:
    search, order = replay(RECORDED, small_space())
    assert order[-4:] == [((8, 0, 1), 8), ((16, 100, 1), 8), ((16, 100, 1), 8), ((8, 0, 1), 8)]
    outcome = search.outcome()
    assert outcome.winner is not None and outcome.winner.candidate == Candidate(8, 0, 1)
    assert outcome.winner.windows == 3 and outcome.default is not None and outcome.default.windows == 3
    assert outcome.confirmation == (
        "re-measured against the default (3 windows each, medians): 1.15x its throughput, kept"
    )
    # pooled: one point per configuration and concurrency
    assert len(outcome.points) == len({(p.candidate, p.concurrency) for p in outcome.points})


def test_a_winner_that_does_not_hold_up_gives_way_to_the_default() -> None:
    table: Table = {
        (16, 100, 1): {1: (100.0, 10.0), 8: [(260.0, 40.0), (300.0, 40.0)], 32: (280.0, 90.0)},
        (8, 100, 1): {1: (100.0, 10.0), 8: [(300.0, 40.0), (265.0, 40.0)], 32: (290.0, 90.0)},
        (4, 100, 1): {1: (90.0, 10.0), 8: (200.0, 40.0), 32: (210.0, 90.0)},
        (8, 0, 1): {1: (90.0, 10.0), 8: (200.0, 40.0), 32: (210.0, 90.0)},
        (8, 100, 2): {1: (90.0, 10.0), 8: (200.0, 40.0), 32: (210.0, 90.0)},
    }
    search, _ = replay(table, small_space())
    outcome = search.outcome()
    # pooled: (8, 100, 1) median of 300, 265, 265 = 265 vs the default's of 260, 300, 300 = 300
    assert outcome.winner is not None and outcome.winner.candidate == Candidate(16, 100, 1)
    assert outcome.winner.measurement.throughput == 300.0
    assert outcome.confirmation.endswith("the default kept")
    assert gain(outcome) == 1.0


def test_within_the_minimum_gain_the_default_stays() -> None:
    table: Table = {(16, 100, 1): flat(100.0), (8, 100, 1): flat(104.0), (4, 100, 1): flat(90.0)}
    table |= {(8, 0, 1): flat(90.0), (8, 100, 2): flat(90.0)}
    search, _ = replay(table, small_space())
    outcome = search.outcome()
    assert outcome.winner is not None and outcome.winner.candidate == Candidate(16, 100, 1)
    assert "1.04x" in outcome.confirmation


def test_nothing_is_re_measured_when_the_default_wins() -> None:
    table: Table = {(16, 100, 1): flat(100.0), (8, 100, 1): flat(80.0), (4, 100, 1): flat(70.0)}
    table |= {(16, 0, 1): flat(50.0), (16, 100, 2): flat(50.0)}
    search, order = replay(table, small_space())
    assert len(order) == len(configs(order)) * 3  # every configuration once per level, no repeats
    assert search.outcome().confirmation == ""


def test_no_re_measurement_past_max_seconds() -> None:
    table: Table = {(16, 100, 1): flat(100.0), (8, 100, 1): flat(200.0)}
    search, order = replay(table, small_space(), max_trials=2, max_seconds=75, seconds=10.0)
    assert len(order) == 7  # 2 x 3 levels, then one re-measurement fits
    outcome = search.outcome()
    assert outcome.confirmation == "not re-measured: maxSeconds (75 s) reached"
    assert outcome.winner is not None and outcome.winner.candidate == Candidate(8, 100, 1)


def test_without_the_target_the_re_measurement_compares_latency_and_one_spike_does_not_decide() -> None:
    table: Table = {
        (16, 100, 1): {1: [(50.0, 90.0), (50.0, 95.0), (50.0, 92.0)]},
        (8, 100, 1): {1: [(45.0, 70.0), (45.0, 400.0), (45.0, 72.0)]},  # one window's spike
        (4, 100, 1): {1: (40.0, 80.0)},
        (8, 0, 1): {1: (44.0, 75.0)},
        (8, 100, 2): {1: (30.0, 71.0)},
    }
    search, _ = replay(table, small_space())
    outcome = search.outcome()
    assert outcome.winner is not None and outcome.winner.candidate == Candidate(8, 100, 1)
    assert outcome.winner.measurement.p99 == 72.0
    assert (
        outcome.confirmation == "re-measured against the default (3 windows each, medians): p99 72.0 vs 92.0 ms, kept"
    )

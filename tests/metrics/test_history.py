"""The dashboard's recorded history: per minute, per queue, bounded."""

from __future__ import annotations

from conveyor_server.observability.history import (
    HISTORY_MINUTES,
    LOG_BUCKET_BOUNDS,
    MICROS_PER_MINUTE,
    History,
    log_bucket,
)

START = 1_000_000 * MICROS_PER_MINUTE


def test_counts_land_in_their_minute_oldest_first() -> None:
    history = History()
    history.count("q", "started", START)
    history.count("q", "started", START + MICROS_PER_MINUTE, 2)
    window = history.window("q", 3, START + MICROS_PER_MINUTE)
    assert [m["started"] for m in window.flow] == [0, 1, 2]


def test_minutes_older_than_the_history_are_dropped() -> None:
    history = History()
    history.count("q", "finished", START)
    later = START + HISTORY_MINUTES * MICROS_PER_MINUTE
    history.count("q", "finished", later)
    window = history.window("q", HISTORY_MINUTES, later)
    assert sum(m["finished"] for m in window.flow) == 1
    assert START // MICROS_PER_MINUTE not in history._queues["q"]


def test_durations_fall_in_power_of_two_buckets() -> None:
    assert log_bucket(0.0005) == 0
    assert log_bucket(0.001) == 0
    assert log_bucket(0.0015) == 1
    assert log_bucket(3.0) == 12  # 2.048 s < 3 s <= 4.096 s
    assert log_bucket(1e9) == len(LOG_BUCKET_BOUNDS)

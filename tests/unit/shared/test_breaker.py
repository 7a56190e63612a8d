"""shared.breaker.CircuitBreaker: closed -> open after N failures -> half-open trial -> closed."""

from __future__ import annotations

import pytest

from shared.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **kwargs: object) -> CircuitBreaker:
    return CircuitBreaker("dep", failure_threshold=3, cooldown_s=30.0, clock=clock, **kwargs)  # type: ignore[arg-type]


def test_opens_after_consecutive_failures_and_skips_during_the_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(2):
        b.failure(b.allow())
    assert b.state == "closed"
    b.success(b.allow())  # a success resets the count
    for _ in range(3):
        b.failure(b.allow())
    assert b.state == "open" and b.opened == 1
    assert b.allow() is None and b.allow() is None
    assert b.skipped == 2
    clock.now += 29.9
    assert b.allow() is None
    snap = b.snapshot()
    assert snap["state"] == "open" and snap["code"] == 2
    assert snap["retry_after_s"] == pytest.approx(0.1)


def test_half_open_lets_exactly_one_trial_through() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure(b.allow())
    clock.now += 30
    assert b.state == "half_open"
    trial = b.allow()
    assert trial is not None and trial.trial
    assert b.allow() is None  # the trial is in flight: others still skip
    b.success(trial)
    assert b.state == "closed" and b.failures == 0
    assert b.allow() is not None


def test_a_failed_trial_opens_again_for_a_full_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.failure(b.allow())
    clock.now += 31
    trial = b.allow()
    b.failure(trial)
    assert b.state == "open" and b.opened == 2
    clock.now += 29
    assert b.allow() is None
    clock.now += 1
    assert b.allow() is not None


def test_late_failures_do_not_extend_the_cooldown_and_a_released_trial_frees_the_slot() -> None:
    clock = Clock()
    b = breaker(clock)
    in_flight = [b.allow() for _ in range(5)]  # five calls started while closed
    for permit in in_flight[:3]:
        b.failure(permit)
    assert b.state == "open"
    clock.now += 20
    for permit in in_flight[3:]:  # they fail later: the cool-down still ends at 30 s
        b.failure(permit)
    clock.now += 10
    trial = b.allow()
    assert trial is not None
    b.release(trial)  # cancelled: no verdict, the next caller may try
    assert b.allow() is not None


def test_only_the_trial_closes_an_open_breaker() -> None:
    clock = Clock()
    b = breaker(clock)
    early = b.allow()  # a call that started before the outage ...
    for _ in range(3):
        b.failure(b.allow())
    b.success(early)  # ... and answered late: no evidence that the dependency is back
    assert b.state == "open"
    clock.now += 30
    b.success(b.allow())
    assert b.state == "closed"


def test_a_fatal_failure_opens_at_once_and_transitions_are_reported() -> None:
    seen: list[tuple[str, str]] = []
    b = breaker(Clock(), on_change=lambda _, old, new: seen.append((old, new)))
    b.failure(b.allow(), fatal=True)
    assert b.state == "open"
    assert seen == [("closed", "open")]
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)

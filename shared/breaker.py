"""Circuit breaker: after repeated failures, skip a dependency for a cool-down, then probe it.

States: ``closed`` (calls go through), ``open`` (calls are skipped until the cool-down has
passed), ``half_open`` (one trial call goes through; its success closes the breaker, its
failure opens it for another cool-down). The state is plain data (:meth:`snapshot`) for
health answers and metrics. Time comes from an injectable clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
# A numeric code per state, for a Prometheus gauge.
STATE_CODES: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(frozen=True)
class Permit:
    """Leave to make one call; `trial` marks the half-open probe."""

    trial: bool


class CircuitBreaker:
    """Count consecutive failures of one dependency; open after `failure_threshold` of them."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[CircuitBreaker, BreakerState, BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or cooldown_s <= 0:
            raise ValueError("need failure_threshold >= 1 and cooldown_s > 0")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_change = on_change
        self.failures = 0  # consecutive
        self.opened = 0  # times the breaker opened
        self.skipped = 0  # calls refused while open
        self._state: BreakerState = "closed"
        self._opened_at = 0.0
        self._trial = False  # a half-open trial call is in flight

    @property
    def state(self) -> BreakerState:
        """Return the state now (an open breaker whose cool-down has passed is half-open)."""
        if self._state == "open" and self.clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return self._state

    def retry_after_s(self) -> float:
        """Return the seconds left of the cool-down (0 unless open)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self.cooldown_s - (self.clock() - self._opened_at))

    def allow(self) -> Permit | None:
        """Return a permit for a call now, or None while open (the half-open trial is one)."""
        state = self.state
        if state == "closed":
            return Permit(trial=False)
        if state == "half_open" and not self._trial:
            self._set("half_open")
            self._trial = True
            return Permit(trial=True)
        self.skipped += 1
        return None

    def success(self, permit: Permit | None = None) -> None:
        """Record a call that worked: the failure count resets; the trial's success closes
        the breaker (a call that started before it opened is no evidence of recovery)."""
        trial = permit is not None and permit.trial
        if trial:
            self._trial = False
        if self._state == "closed" or trial:
            self.failures = 0
        if trial and self._state != "closed":
            self._set("closed")

    def failure(self, permit: Permit | None = None, *, fatal: bool = False) -> None:
        """Record a failed call; open at the threshold (at once when fatal, or on the trial).

        A failure of a call that started before the breaker opened (not the trial) counts,
        but does not extend a cool-down already running.
        """
        self.failures += 1
        trial = permit is not None and permit.trial
        if trial:
            self._trial = False
        elif self._state != "closed":
            return
        if trial or fatal or self.failures >= self.failure_threshold:
            self.opened += 1
            self._opened_at = self.clock()
            self._set("open")

    def release(self, permit: Permit | None) -> None:
        """Give back a permit whose call ended without a verdict (cancelled, not attempted)."""
        if permit is not None and permit.trial:
            self._trial = False

    def snapshot(self) -> dict[str, object]:
        """Return the state as plain data (name, state, code, failures, counters, cool-down)."""
        state = self.state
        return {
            "name": self.name,
            "state": state,
            "code": STATE_CODES[state],
            "consecutive_failures": self.failures,
            "opened": self.opened,
            "skipped": self.skipped,
            "retry_after_s": round(self.retry_after_s(), 3),
        }

    def _set(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        if old != new and self.on_change is not None:
            self.on_change(self, old, new)


def log_transitions(breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
    """Log a breaker's open and close transitions (an `on_change` hook)."""
    if new == "open":  # a failed half-open trial re-opens it: not news, only debug
        log.log(
            logging.WARNING if old == "closed" else logging.DEBUG,
            "%s: circuit open after %d consecutive failure(s); skipping it for %g s",
            breaker.name,
            breaker.failures,
            breaker.cooldown_s,
        )
    elif new == "closed":
        log.warning("%s: circuit closed, calls go through again", breaker.name)

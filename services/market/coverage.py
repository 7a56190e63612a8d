"""Coverage and freshness of an answer: how much of the asked range the bars cover, and how
old the latest bar is in exchange sessions. No I/O: callers pass the bars and the clock.

An answer is never silently shorter than asked: `coverage_of` counts the sessions of the
symbol's calendar that the asked range has before the first bar and after the last one
(up to the last completed session: a session not yet over cannot be missing) and writes a
note for each end that falls short. An empty range is a 404 `no_data` naming the range the
data does cover (`NoDataError`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from services.market.calendar import last_final_day, sessions_between
from shared.errors import NoDataError


def sessions_in(symbol: str, start: date, end: date) -> int:
    """Return the number of symbol's sessions from start to end inclusive (0 if end < start)."""
    if end < start:
        return 0
    return len(sessions_between(symbol, start, end))


@dataclass(frozen=True)
class Freshness:
    """The date of an answer's latest bar and how many completed sessions came after it."""

    as_of: date
    stale: bool
    age_sessions: int

    def fields(self) -> dict[str, object]:
        """Return the answer fields (`as_of`, `stale`, `age_sessions`)."""
        return {"as_of": self.as_of, "stale": self.stale, "age_sessions": self.age_sessions}


def freshness(symbol: str, last_bar: date, now: datetime, until: date | None = None) -> Freshness:
    """Return how far last_bar is behind the last completed session (or until, if earlier)."""
    final = last_final_day(symbol, now)
    if until is not None and until < final:
        final = until
    age = sessions_in(symbol, last_bar + timedelta(days=1), final)
    return Freshness(as_of=last_bar, stale=age > 0, age_sessions=age)


@dataclass(frozen=True)
class Coverage:
    """The asked range against the bars answered, in sessions short at each end."""

    asked_start: date
    asked_end: date
    first_bar: date
    last_bar: date
    sessions_missing_before: int
    sessions_missing_after: int

    @property
    def complete(self) -> bool:
        """Return whether the bars reach both ends of the asked range."""
        return self.sessions_missing_before == 0 and self.sessions_missing_after == 0

    def fields(self) -> dict[str, object]:
        """Return the answer's `coverage` object."""
        return {
            "asked_start": self.asked_start,
            "asked_end": self.asked_end,
            "first_bar": self.first_bar,
            "last_bar": self.last_bar,
            "sessions_missing_before": self.sessions_missing_before,
            "sessions_missing_after": self.sessions_missing_after,
            "complete": self.complete,
        }

    def notes(self, symbol: str) -> list[str]:
        """Return one note per end of the asked range that the bars do not reach."""
        out = []
        if self.sessions_missing_before:
            out.append(
                f"{symbol}: the bars start {self.first_bar}, "
                f"{self.sessions_missing_before} session(s) after the asked start "
                f"{self.asked_start}: the data has no earlier bar."
            )
        if self.sessions_missing_after:
            out.append(
                f"{symbol}: the bars end {self.last_bar}, "
                f"{self.sessions_missing_after} completed session(s) before the asked end "
                f"{self.asked_end}: the data has no later bar yet."
            )
        return out


def coverage_of(
    symbol: str, first_bar: date, last_bar: date, start: date, end: date, now: datetime
) -> Coverage:
    """Return the coverage of bars first_bar..last_bar answering start..end at now."""
    until = min(end, last_final_day(symbol, now))
    return Coverage(
        asked_start=start,
        asked_end=end,
        first_bar=first_bar,
        last_bar=last_bar,
        sessions_missing_before=sessions_in(symbol, start, first_bar - timedelta(days=1)),
        sessions_missing_after=sessions_in(symbol, last_bar + timedelta(days=1), until),
    )


def no_data(symbol: str, start: date, end: date, span: tuple[date, date] | None) -> NoDataError:
    """Return the 404 of an asked range without bars, naming the range the data covers."""
    where = (
        f"the data covers {span[0]}..{span[1]}"
        if span is not None
        else "no bar of it is stored or available from the data sources"
    )
    return NoDataError(
        f"No {symbol} bars between {start} and {end}; {where}. Ask for dates inside that range.",
        field="start",
    )

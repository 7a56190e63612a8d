"""Daily bars as pandas frames: the column layout providers, repository and shaping share."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

# Bar columns, in order; frames are indexed by UTC-midnight timestamps named `timestamp`.
BAR_COLUMNS = ("open", "high", "low", "close", "adj_close", "volume")


def empty_bars() -> pd.DataFrame:
    """Return an empty frame with the bar columns and a UTC index."""
    return pd.DataFrame(
        {c: pd.Series(dtype="float64") for c in BAR_COLUMNS},
        index=pd.DatetimeIndex([], tz="UTC", name="timestamp"),
    )


@dataclass(frozen=True)
class Loaded:
    """Validated bars loaded for a window, with where they came from."""

    frame: pd.DataFrame
    served_from: str  # "database" | "provider"
    sources: list[str]
    rejected: list[dict[str, object]]

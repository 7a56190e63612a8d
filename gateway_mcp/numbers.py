"""Numbers a model reads: 6 significant digits, money to the cent (MCP answers only).

A float64 printed in full is 17-18 characters, most of them noise to a reader; REST answers
keep every digit, the gateway's answers keep what can matter. Money is known by its field
name (`equity`, `cash`, `final_capital`, `pnl`, `commission`, ...): rounded to cents, which
for a large account keeps more than 6 digits.
"""

from __future__ import annotations

import math
import re
from typing import Any

SIGNIFICANT_DIGITS = 6
_MONEY = re.compile(
    r"(^|_)(equity|cash|capital|pnl|profit|commission|commissions|fees?|costs?|notional)($|_)"
)


def is_money(name: str | None) -> bool:
    """Return True when a field of this name holds an amount of money."""
    return bool(name) and bool(_MONEY.search(str(name).lower()))


def round_significant(x: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """Return x rounded to digits significant digits (non-finite values unchanged)."""
    if x == 0 or not math.isfinite(x):
        return x
    return round(x, digits - 1 - math.floor(math.log10(abs(x))))


def round_number(x: float, name: str | None) -> float:
    """Return x as a model reads it: money to the cent, anything else to 6 digits."""
    if is_money(name) and abs(x) >= 0.01:
        return round(x, 2)
    return round_significant(x)


def round_numbers(data: Any, name: str | None = None) -> Any:
    """Return data with every float rounded for a model (ints, strings, bools unchanged).

    name is the field the value sits under; list items take their list's name.
    """
    if isinstance(data, float):
        return round_number(data, name)
    if isinstance(data, dict):
        return {k: round_numbers(v, k) for k, v in data.items()}
    if isinstance(data, list):
        return [round_numbers(v, name) for v in data]
    return data

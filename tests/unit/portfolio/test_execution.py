"""The session planner: the engine's sizing, and every risk limit refusing or cutting as stated."""

from __future__ import annotations

import pytest

from services.portfolio.execution import (
    Book,
    CostModel,
    Gate,
    Holding,
    Limits,
    Sizing,
    decide,
    order_shares,
    plan_session,
)

COSTS = CostModel(commission=0.0, commission_rate=0.001, min_commission=1.0, slippage=0.0)
QUOTES = {"A": 100.0, "B": 50.0}


def plan(
    book: Book,
    pending: dict[str, int],
    *,
    limits: Limits = Limits(),
    gate: Gate | None = None,
    sizing: Sizing = Sizing(max_positions=2),
):  # type: ignore[no-untyped-def]
    return plan_session(
        book,
        pending,
        QUOTES,
        symbols=["A", "B"],
        sizing=sizing,
        costs=COSTS,
        limits=limits,
        gate=gate or Gate(),
    )


def test_all_in_spends_the_cash_within_its_cost() -> None:
    shares, _ = order_shares(Sizing(), COSTS, 100.0, 10_000.0, 10_000.0, 1)
    assert shares == 99  # 99 * 100 + 9.9 commission <= 10,000 < 100 * 100.1
    assert shares * 100 + COSTS.fee(shares, 100.0) <= 10_000.0


def test_closes_come_before_openings_and_fund_them() -> None:
    book = Book(cash=0.0, holdings={"A": Holding(100.0, 90.0, 1.0)})
    out = plan(book, {"A": 0, "B": 1}, sizing=Sizing(max_positions=1))
    assert [(o.symbol, o.side, o.status) for o in out] == [
        ("A", "sell", "new"),
        ("B", "buy", "new"),
    ]
    assert out[1].quantity == 199  # the sale's 10,000 - 10 fee buys 199 at 50.05 each


def test_max_position_pct_cuts_an_opening() -> None:
    out = plan(Book(cash=10_000.0), {"A": 1}, limits=Limits(max_position_pct=0.25))
    assert out[0].status == "new" and out[0].quantity == 25 and out[0].requested > 25
    assert out[0].reason is not None and "max_position_pct" in out[0].reason


def test_max_gross_exposure_refuses_when_nothing_is_left() -> None:
    book = Book(cash=5_000.0, holdings={"B": Holding(100.0, 50.0, 1.0)})  # gross 5,000 of 10,000
    out = plan(book, {"A": 1}, limits=Limits(max_gross_exposure=0.5))
    assert out[0].status == "refused" and "max_gross_exposure" in (out[0].reason or "")
    assert "A" not in book.holdings


def test_max_orders_per_day_refuses_the_rest() -> None:
    book = Book(cash=0.0, holdings={"A": Holding(10.0, 90.0, 1.0), "B": Holding(10.0, 40.0, 1.0)})
    out = plan(book, {"A": 0, "B": 0}, limits=Limits(max_orders_per_day=1))
    assert [o.status for o in out] == ["new", "refused"]
    assert "max_orders_per_day" in (out[1].reason or "")


def test_daily_loss_refuses_entries_but_not_exits() -> None:
    book = Book(cash=1_000.0, holdings={"A": Holding(10.0, 90.0, 1.0)})
    out = plan(book, {"A": 0, "B": 1}, gate=Gate(no_entries="daily_loss_limit: 5%"))
    assert [(o.symbol, o.status) for o in out] == [("A", "new"), ("B", "refused")]


def test_a_halt_refuses_everything() -> None:
    book = Book(cash=1_000.0, holdings={"A": Holding(10.0, 90.0, 1.0)})
    out = plan(book, {"A": 0, "B": 1}, gate=Gate(halted="kill switch"))
    assert [o.status for o in out] == ["refused", "refused"]
    assert book.holdings["A"].quantity == 10.0 and book.cash == 1_000.0


def test_a_wish_equal_to_the_side_is_nothing() -> None:
    book = Book(cash=0.0, holdings={"A": Holding(10.0, 90.0, 1.0)})
    assert decide({"A": 1, "B": None}, book) == {}
    assert decide({"A": 0, "B": 1}, book) == {"A": 0, "B": 1}


@pytest.mark.parametrize("method", ["percent_equity", "fixed_cash", "fixed_shares"])
def test_sized_orders_never_exceed_the_cash(method: str) -> None:
    value = {"percent_equity": 2.0, "fixed_cash": 50_000.0, "fixed_shares": 500.0}[method]
    shares, want = order_shares(
        Sizing(method=method, value=value), COSTS, 100.0, 10_000.0, 10_000.0, 1
    )
    assert want > shares  # resized to what it can afford
    assert shares * 100 + COSTS.fee(shares, 100.0) <= 10_000.0

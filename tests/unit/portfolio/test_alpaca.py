"""The Alpaca adapter against a local HTTP stub of Alpaca's trading API (contract test).

alpaca-py's `TradingClient` makes real HTTP requests to the stub (`ALPACA_URL`), with the
keys from the encrypted key store. The service-level tests run a deployment on an Alpaca
account: only the latest closed session trades, a crash between deciding and sending is
reconciled at the next start without a second order, and the book is the broker's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from fastapi.testclient import TestClient
from pydantic import SecretStr

from services.portfolio.alpaca import AlpacaBroker, alpaca_client
from services.portfolio.brokers import BrokerNotConfiguredError, Ticket
from services.portfolio.execution import CostModel
from services.portfolio.orders import SimulatedCrashError
from services.portfolio.settings import PortfolioSettings
from shared.errors import UpstreamUnavailableError
from shared.keys import KeyStore
from tests.unit.portfolio.alpaca_stub import AlpacaStub, serve
from tests.unit.portfolio.conftest import build_platform, portfolio_settings

KEY, SECRET = "PKSTUBKEY", "stub-secret"
MASTER = SecretStr(Fernet.generate_key().decode())


def settings_for(data_dir: Path, url: str, **overrides: Any) -> PortfolioSettings:
    """Return portfolio settings that reach the stub with the stored keys."""
    return portfolio_settings(data_dir, alpaca_url=url, trading_master_key=MASTER, **overrides)


def store_keys(data_dir: Path, key: str = KEY, secret: str = SECRET) -> None:
    """Store the Alpaca keys as `trading keys set` does."""
    store = KeyStore(data_dir, MASTER)
    store.set("ALPACA_API_KEY", SecretStr(key))
    store.set("ALPACA_SECRET_KEY", SecretStr(secret))


@pytest.fixture
def stub() -> Iterator[AlpacaStub]:
    s = AlpacaStub(key=KEY, secret=SECRET, cash=100_000.0, quotes={"AAPL": 100.0, "MSFT": 50.0})
    s.set_clock(
        "2019-12-31T16:30:00-05:00",
        is_open=False,
        next_open="2020-01-02T09:30:00-05:00",
        next_close="2020-01-02T16:00:00-05:00",
    )
    with serve(s):
        yield s


def broker(tmp_path: Path, stub: AlpacaStub) -> AlpacaBroker:
    store_keys(tmp_path)
    return AlpacaBroker(alpaca_client(settings_for(tmp_path, stub.url)))


def test_missing_keys_are_a_problem_saying_how_to_store_them(tmp_path: Path) -> None:
    with pytest.raises(BrokerNotConfiguredError) as e:
        alpaca_client(settings_for(tmp_path, "http://127.0.0.1:9"))
    assert "trading keys set ALPACA_API_KEY" in e.value.detail
    assert e.value.status == 409


def test_live_is_refused_without_alpaca_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_keys(tmp_path)
    monkeypatch.setenv("ALPACA_PAPER", "0")  # from the environment, as a server reads it
    with pytest.raises(BrokerNotConfiguredError) as e:
        alpaca_client(portfolio_settings(tmp_path, trading_master_key=MASTER))
    assert "ALPACA_LIVE=1" in e.value.detail
    monkeypatch.setenv("ALPACA_LIVE", "1")
    live = alpaca_client(portfolio_settings(tmp_path, trading_master_key=MASTER))
    assert live._base_url == "https://api.alpaca.markets"  # no request is made here
    monkeypatch.delenv("ALPACA_PAPER")
    paper = alpaca_client(portfolio_settings(tmp_path, trading_master_key=MASTER))
    assert paper._base_url == "https://paper-api.alpaca.markets"


def test_account_and_clock(tmp_path: Path, stub: AlpacaStub) -> None:
    b = broker(tmp_path, stub)
    account = asyncio.run(b.account())
    assert (account.cash, account.equity, account.blocked) == (100_000.0, 100_000.0, False)
    clock = asyncio.run(b.clock())
    assert clock.is_open is False
    assert clock.next_open.date().isoformat() == "2020-01-02"


def test_wrong_keys_are_an_upstream_problem(tmp_path: Path, stub: AlpacaStub) -> None:
    store_keys(tmp_path, secret="wrong")
    b = AlpacaBroker(alpaca_client(settings_for(tmp_path, stub.url)))
    with pytest.raises(UpstreamUnavailableError, match="401 request is not authorized"):
        asyncio.run(b.account())


def test_a_duplicate_submit_returns_the_existing_order(tmp_path: Path, stub: AlpacaStub) -> None:
    b = broker(tmp_path, stub)
    ticket = Ticket("d1-2020-01-02-AAPL-buy", "AAPL", "buy", 10.0)

    async def twice() -> list[Any]:
        first = await b.submit(ticket, quote=100.0, costs=CostModel(), cash=0.0)
        again = await b.submit(ticket, quote=100.0, costs=CostModel(), cash=0.0)
        return [first, again, await b.open_orders()]

    first, again, open_ids = asyncio.run(twice())
    assert first.status == again.status == "submitted"
    assert stub.submissions == 2 and len(stub.orders) == 1  # Alpaca said 422 to the second
    assert open_ids == [ticket.client_order_id]
    assert stub.fill_at_open({"AAPL": 101.5}) == 1
    filled = asyncio.run(b.order(ticket.client_order_id))
    assert filled is not None
    assert (filled.status, filled.quantity, filled.price) == ("filled", 10.0, 101.5)
    again = asyncio.run(b.submit(ticket, quote=100.0, costs=CostModel(), cash=0.0))
    assert again.status == "filled" and len(stub.orders) == 1
    positions = asyncio.run(b.positions())
    assert positions["AAPL"].quantity == 10.0 and positions["AAPL"].average_price == 101.5
    assert asyncio.run(b.order("never-sent")) is None


def test_refusals_are_rejections_with_alpacas_reason(tmp_path: Path, stub: AlpacaStub) -> None:
    b = broker(tmp_path, stub)
    big = Ticket("too-big", "AAPL", "buy", 5_000.0)
    got = asyncio.run(b.submit(big, quote=100.0, costs=CostModel(), cash=0.0))
    assert (got.status, got.reason) == ("rejected", "alpaca: insufficient buying power")
    unknown = Ticket("unknown", "ZZZZ", "buy", 1.0)
    got = asyncio.run(b.submit(unknown, quote=1.0, costs=CostModel(), cash=0.0))
    assert got.status == "rejected" and "not found" in (got.reason or "")


# ---- the service on an Alpaca account ---------------------------------------------------

SMA = {"name": "sma_crossover", "params": {"fast": 10, "slow": 30}}


def platform_on(base: Path, stub: AlpacaStub) -> TestClient:
    return build_platform(base, settings_for(base / "portfolio", stub.url))


def last_long_wish(c: TestClient, symbol: str, start: str, end: str) -> str:
    """Return the last session up to end at whose close the strategy wishes to go long."""
    sig = c.post(
        "/backtest/signals",
        json={"symbols": [symbol], "start_date": start, "end_date": end, "strategy": SMA},
    ).json()
    wishes = sig["series"][0]["wishes"]
    days = [t[:10] for t, w in zip(sig["timestamps"], wishes, strict=True) if w == 1]
    assert days, "no long wish to trade"
    return days[-1]


@pytest.mark.parametrize("sent", [False, True], ids=["crash_before_send", "crash_after_send"])
def test_an_alpaca_deployment_trades_the_latest_session_once(
    tmp_path: Path, stub: AlpacaStub, sent: bool
) -> None:
    """Killed after deciding, before sending (or after sending, before recording it): the
    restart sends once (or finds Alpaca's order by its client_order_id), never twice."""
    store_keys(tmp_path / "portfolio")
    with platform_on(tmp_path, stub) as c:
        day = last_long_wish(c, "AAPL", "2018-01-02", "2019-12-31")
        nxt = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
        stub.set_clock(  # the evening after that session's close
            f"{day}T17:00:00-05:00",
            is_open=False,
            next_open=f"{nxt}T09:30:00-05:00",
            next_close=f"{nxt}T16:00:00-05:00",
        )
        account = c.post("/portfolio/accounts", json={"name": "alpaca", "broker": "alpaca"})
        assert account.status_code == 201, account.text
        assert account.json()["cash"] == 100_000.0 and account.json()["broker"] == "alpaca"
        aid = account.json()["id"]
        second = c.post("/portfolio/accounts", json={"name": "again", "broker": "alpaca"})
        assert second.status_code == 409 and second.json()["code"] == "alpaca_account_exists"
        dep = c.post(
            "/portfolio/deployments",
            json={
                "account_id": aid,
                "strategy": SMA,
                "symbols": ["AAPL"],
                "start_date": "2018-01-02",
            },
        ).json()
        # an until before the latest closed session is a replay: refused
        past = c.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": "2018-06-29"})
        assert past.status_code == 409, past.text
        assert past.json()["code"] == "replay_not_supported"
        assert "paper" in past.json()["detail"]
        # crash between deciding and sending the order of the latest session
        portfolio = next(r.app for r in c.app.routes if getattr(r, "path", "") == "/portfolio")
        portfolio.state.portfolio.orders.crash_after_decide = True
        stub.quotes["AAPL"] = 10.0  # cheap enough for the stub's buying-power check
        try:
            crashed = c.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": day})
            assert crashed.status_code == 500, crashed.text
        except SimulatedCrashError:
            pass
        orders = c.get(f"/portfolio/accounts/{aid}/orders").json()["orders"]
        assert [o["status"] for o in orders] == ["new"] and stub.submissions == 0
        if sent:  # the order reached Alpaca, the process died before recording it
            o = orders[0]
            ticket = Ticket(o["client_order_id"], o["symbol"], o["side"], o["quantity"])
            b = broker(tmp_path, stub)
            asyncio.run(b.submit(ticket, quote=0.0, costs=CostModel(), cash=0.0))
    # restart: reconciliation sends the stored order once
    with platform_on(tmp_path, stub) as c:
        orders = c.get(f"/portfolio/accounts/{aid}/orders").json()["orders"]
        assert [o["status"] for o in orders] == ["submitted"]
        assert len(stub.orders) == 1
        assert stub.submissions == (2 if sent else 1)  # Alpaca said 422 to the repeat
        sent = next(iter(stub.orders.values()))
        assert sent["client_order_id"] == orders[0]["client_order_id"]
        assert float(sent["qty"]) == orders[0]["quantity"] > 0
        # the run again: the session is processed; the order is not sent a second time
        run = c.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": day})
        assert run.status_code == 200, run.text
        assert run.json()["last_session"] == day
        assert len(stub.orders) == 1
        again = c.post(f"/portfolio/deployments/{dep['id']}/run", json={"until": day})
        assert again.json()["sessions"] == 0
        # Alpaca fills it at the next open; the next start books it and takes its book
        stub.fill_at_open({"AAPL": 12.0})
    with platform_on(tmp_path, stub) as c:
        orders = c.get(f"/portfolio/accounts/{aid}/orders").json()["orders"]
        assert [o["status"] for o in orders] == ["filled"]
        fills = c.get(f"/portfolio/accounts/{aid}/fills").json()["fills"]
        assert [(f["price"], f["shares"]) for f in fills] == [(12.0, orders[0]["quantity"])]
        book = c.get(f"/portfolio/accounts/{aid}").json()
        assert book["cash"] == pytest.approx(stub.cash)
        assert [(p["symbol"], p["quantity"]) for p in book["positions"]] == [
            ("AAPL", stub.positions["AAPL"]["qty"])
        ]

"""A local HTTP server speaking the Alpaca trading API endpoints the adapter uses.

The only test double of the portfolio's Alpaca tests: a real HTTP server on 127.0.0.1 (a
thread), answering alpaca-py's `TradingClient` with the JSON shapes and status codes of
Alpaca's trading API v2 (https://docs.alpaca.markets/reference): `GET /v2/account`,
`POST /v2/orders`, `GET /v2/orders`, `GET /v2/orders:by_client_order_id`, `GET /v2/positions`,
`GET /v2/clock`. Errors are Alpaca's `{"code": ..., "message": ...}`: 401 without the keys,
403 `insufficient buying power`, 422 `client_order_id must be unique` and bad quantities,
404 for an unknown client order id. Orders are accepted (not filled) until the test opens
the next session with `fill_at_open`, as Alpaca does with a market order sent after hours.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

ACCOUNT_ID = "904837e3-3b76-47ec-b432-046db621571b"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class AlpacaStub:
    """The state of one Alpaca paper account, and the server that exposes it."""

    def __init__(self, *, key: str, secret: str, cash: float, quotes: dict[str, float]) -> None:
        self.key, self.secret = key, secret
        self.cash = cash
        self.quotes = dict(quotes)  # the price a buying-power check and a fill use
        self.orders: dict[str, dict[str, Any]] = {}  # by Alpaca's id, in submission order
        self.positions: dict[str, dict[str, float]] = {}  # symbol -> qty, avg
        self.submissions = 0  # POST /v2/orders calls, duplicates included
        self.clock: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.url = ""

    # ---- what a test does to the account ----------------------------------------------

    def set_clock(self, timestamp: str, *, is_open: bool, next_open: str, next_close: str) -> None:
        """Set the exchange clock `GET /v2/clock` answers."""
        self.clock = {
            "timestamp": timestamp,
            "is_open": is_open,
            "next_open": next_open,
            "next_close": next_close,
        }

    def fill_at_open(self, opens: dict[str, float]) -> int:
        """Fill every open order at its symbol's opening price (the next session's open);
        return how many filled."""
        n = 0
        with self.lock:
            for o in self.orders.values():
                if o["status"] != "accepted":
                    continue
                price = opens[o["symbol"]]
                qty = float(o["qty"])
                sign = 1.0 if o["side"] == "buy" else -1.0
                self.cash -= sign * qty * price
                pos = self.positions.get(o["symbol"], {"qty": 0.0, "avg": price})
                new_qty = pos["qty"] + sign * qty
                if new_qty == 0:
                    self.positions.pop(o["symbol"], None)
                else:
                    same = pos["qty"] * sign > 0
                    avg = (
                        (pos["qty"] * pos["avg"] + sign * qty * price) / new_qty if same else price
                    )
                    self.positions[o["symbol"]] = {"qty": new_qty, "avg": avg}
                self.quotes[o["symbol"]] = price
                o.update(
                    status="filled",
                    filled_qty=o["qty"],
                    filled_avg_price=str(price),
                    filled_at=_now(),
                    updated_at=_now(),
                )
                n += 1
        return n

    # ---- Alpaca's JSON shapes ---------------------------------------------------------

    def account_json(self) -> dict[str, Any]:
        long = sum(p["qty"] * self.quotes[s] for s, p in self.positions.items() if p["qty"] > 0)
        short = sum(p["qty"] * self.quotes[s] for s, p in self.positions.items() if p["qty"] < 0)
        equity = self.cash + long + short
        return {
            "id": ACCOUNT_ID,
            "account_number": "PA3STUB00001",
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": f"{max(self.cash, 0.0):.2f}",
            "regt_buying_power": f"{max(self.cash, 0.0):.2f}",
            "daytrading_buying_power": "0",
            "non_marginable_buying_power": f"{max(self.cash, 0.0):.2f}",
            "cash": f"{self.cash:.2f}",
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "portfolio_value": f"{equity:.2f}",
            "pattern_day_trader": False,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": "2024-01-02T15:04:05.123456Z",
            "trade_suspended_by_user": False,
            "multiplier": "1",
            "shorting_enabled": True,
            "equity": f"{equity:.2f}",
            "last_equity": f"{equity:.2f}",
            "long_market_value": f"{long:.2f}",
            "short_market_value": f"{short:.2f}",
            "initial_margin": "0",
            "maintenance_margin": "0",
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": 0,
        }

    def position_json(self, symbol: str, p: dict[str, float]) -> dict[str, Any]:
        price = self.quotes[symbol]
        qty = p["qty"]
        return {
            "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, symbol)),
            "symbol": symbol,
            "exchange": "NASDAQ",
            "asset_class": "us_equity",
            "asset_marginable": True,
            "avg_entry_price": str(p["avg"]),
            "qty": str(qty),
            "qty_available": str(qty),
            "side": "long" if qty > 0 else "short",
            "market_value": str(qty * price),
            "cost_basis": str(qty * p["avg"]),
            "unrealized_pl": str(qty * (price - p["avg"])),
            "unrealized_plpc": str((price / p["avg"] - 1) if p["avg"] else 0),
            "unrealized_intraday_pl": "0",
            "unrealized_intraday_plpc": "0",
            "current_price": str(price),
            "lastday_price": str(price),
            "change_today": "0",
        }

    def new_order(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer `POST /v2/orders` as Alpaca does."""
        with self.lock:
            self.submissions += 1
            cid = body.get("client_order_id") or str(uuid.uuid4())
            if any(o["client_order_id"] == cid for o in self.orders.values()):
                return 422, {"code": 40010001, "message": "client_order_id must be unique"}
            symbol = str(body.get("symbol", "")).upper()
            if symbol not in self.quotes:
                return 422, {"code": 40010001, "message": f'asset "{symbol}" not found'}
            try:
                qty = float(body["qty"])
            except (KeyError, TypeError, ValueError):
                return 422, {"code": 40010001, "message": "qty is required"}
            if qty <= 0:
                return 422, {"code": 40010001, "message": "qty must be > 0"}
            if body.get("type") != "market":
                return 422, {"code": 40010001, "message": "this stub takes market orders"}
            side = body.get("side")
            held = self.positions.get(symbol, {"qty": 0.0})["qty"]
            opening_value = qty * self.quotes[symbol] if side == "buy" and held >= 0 else 0.0
            if opening_value > self.cash:
                return 403, {"code": 40310000, "message": "insufficient buying power"}
            now = _now()
            order = {
                "id": str(uuid.uuid4()),
                "client_order_id": cid,
                "created_at": now,
                "updated_at": now,
                "submitted_at": now,
                "filled_at": None,
                "expired_at": None,
                "expires_at": None,
                "canceled_at": None,
                "failed_at": None,
                "replaced_at": None,
                "replaced_by": None,
                "replaces": None,
                "asset_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, symbol)),
                "symbol": symbol,
                "asset_class": "us_equity",
                "notional": None,
                "qty": str(body["qty"]),
                "filled_qty": "0",
                "filled_avg_price": None,
                "order_class": "simple",
                "order_type": "market",
                "type": "market",
                "side": side,
                "position_intent": ("buy_to_open" if side == "buy" else "sell_to_close"),
                "time_in_force": body.get("time_in_force", "day"),
                "limit_price": None,
                "stop_price": None,
                "status": "accepted",
                "extended_hours": False,
                "legs": None,
                "trail_percent": None,
                "trail_price": None,
                "hwm": None,
            }
            self.orders[order["id"]] = order
            return 200, order

    # ---- the server -------------------------------------------------------------------

    def answer(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Any:
        """Return (status, JSON) for one request."""
        if path == "/v2/account" and method == "GET":
            return 200, self.account_json()
        if path == "/v2/clock" and method == "GET":
            return 200, self.clock
        if path == "/v2/positions" and method == "GET":
            return 200, [self.position_json(s, p) for s, p in self.positions.items()]
        if path == "/v2/orders" and method == "POST":
            return self.new_order(body if isinstance(body, dict) else {})
        if path == "/v2/orders" and method == "GET":
            status = query.get("status", ["open"])[0]
            limit = int(query.get("limit", ["50"])[0])
            ended = {"filled", "canceled", "expired", "rejected"}
            rows = [
                o
                for o in self.orders.values()
                if status == "all" or (status == "open") == (o["status"] not in ended)
            ]
            return 200, rows[:limit]
        if path == "/v2/orders:by_client_order_id" and method == "GET":
            cid = query.get("client_order_id", [""])[0]
            for o in self.orders.values():
                if o["client_order_id"] == cid:
                    return 200, o
            return 404, {"code": 40410000, "message": "order not found"}
        return 404, {"code": 40410000, "message": "endpoint not found"}


class _Handler(BaseHTTPRequestHandler):
    stub: AlpacaStub

    def _serve(self, method: str) -> None:
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if (
            self.headers.get("APCA-API-KEY-ID") != self.stub.key
            or self.headers.get("APCA-API-SECRET-KEY") != self.stub.secret
        ):
            status, payload = 401, {"code": 40110000, "message": "request is not authorized"}
        else:
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                status, payload = 400, {"code": 40010000, "message": "malformed json"}
            else:
                status, payload = self.stub.answer(method, url.path, parse_qs(url.query), body)
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@contextmanager
def serve(stub: AlpacaStub) -> Iterator[AlpacaStub]:
    """Serve stub on 127.0.0.1 (a free port) in a thread; `stub.url` is its base URL."""
    handler = type("Handler", (_Handler,), {"stub": stub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

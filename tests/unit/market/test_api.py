"""The market service end to end in-process on real CSV data, embedded SQLite, L1 cache."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib
from fastapi.testclient import TestClient
from pydantic import ValidationError

from services.market.app import create_app
from shared.quant import warmup_bars
from tests.conftest import market_settings


def stored_rows(settings_dir: Path, symbol: str | None = None) -> int:
    with sqlite3.connect(settings_dir / "trading.db") as conn:
        if symbol is None:
            return conn.execute("select count(*) from market_data").fetchone()[0]
        return conn.execute(
            "select count(*) from market_data where symbol = ?", (symbol,)
        ).fetchone()[0]


def test_historical_returns_exactly_the_csv_rows_then_serves_from_cache(
    client: TestClient, aapl: pd.DataFrame, tmp_path: Path
) -> None:
    params = {"start": "2020-01-02", "end": "2023-10-27"}
    first = client.get("/historical/AAPL", params=params)
    assert first.status_code == 200, first.text
    body = first.json()
    expected = aapl.loc["2020-01-02":"2023-10-27"]
    assert [b["timestamp"][:10] for b in body["bars"]] == list(expected.index)
    got = pd.DataFrame(body["bars"])
    for col in ("open", "high", "low", "close", "adj_close"):
        np.testing.assert_array_equal(got[col].to_numpy(), expected[col].to_numpy())
    np.testing.assert_array_equal(got["volume"].to_numpy(), expected["volume"].to_numpy())
    assert body["metadata"]["cached"] is False
    assert body["metadata"]["source"] == "csv"
    rows_after_first = stored_rows(tmp_path, "AAPL")
    assert rows_after_first >= len(expected)

    second = client.get("/historical/AAPL", params=params).json()
    assert second["metadata"]["cached"] is True
    assert second["metadata"]["cache_level"] == "l1"
    assert second["bars"] == body["bars"]
    assert stored_rows(tmp_path, "AAPL") == rows_after_first


def test_a_cache_hit_is_a_copy_and_the_cached_entry_never_changes(client: TestClient) -> None:
    params = {"start": "2021-01-04", "end": "2021-03-31"}
    first = client.get("/historical/KO", params=params).json()
    for _ in range(2):
        hit = client.get("/historical/KO", params=params).json()
        assert (hit["metadata"]["cached"], hit["metadata"]["cache_level"]) == (True, "l1")
        assert hit["bars"] == first["bars"]
    service = client.app.state.market  # type: ignore[attr-defined]
    key = "market:historical:KO:1d:2021-01-04:2021-03-31:0:0"
    entry, level = asyncio.run(service.histories.get(key))
    assert level == "l1"
    assert (entry.metadata.cached, entry.metadata.cache_level) == (False, "provider")
    with pytest.raises(ValidationError):
        entry.metadata.cached = True
    assert client.get("/price/KO").json()["cached"] is False
    assert client.get("/price/KO").json()["cached"] is True
    quote, _ = asyncio.run(service.prices.get("market:price:KO"))
    assert quote.cached is False


def test_stored_rows_are_reused_and_never_duplicated(
    tmp_path: Path, csv_dir: Path, aapl: pd.DataFrame
) -> None:
    settings = market_settings(tmp_path, csv_dir)
    with TestClient(create_app(settings)) as c:
        c.get("/historical/MSFT", params={"start": "2021-01-01", "end": "2021-12-31"})
        n = stored_rows(tmp_path, "MSFT")
    with TestClient(create_app(settings)) as c:  # new process-level cache: L1 is empty
        again = c.get("/historical/MSFT", params={"start": "2021-03-01", "end": "2021-06-30"})
        assert again.json()["metadata"]["cache_level"] == "database"
        wider = c.get("/historical/MSFT", params={"start": "2020-06-01", "end": "2021-12-31"})
        assert wider.json()["metadata"]["cache_level"] == "provider"
    assert stored_rows(tmp_path, "MSFT") > n
    with sqlite3.connect(tmp_path / "trading.db") as conn:
        dupes = conn.execute(
            "select count(*) from (select symbol, timestamp from market_data "
            "group by symbol, timestamp having count(*) > 1)"
        ).fetchone()[0]
    assert dupes == 0


def test_prices_are_stored_unrounded(client: TestClient, aapl: pd.DataFrame, tmp_path) -> None:
    client.get("/historical/AAPL", params={"start": "2003-10-30", "end": "2003-11-30"})
    with sqlite3.connect(tmp_path / "trading.db") as conn:
        first_open = conn.execute(
            "select open from market_data where symbol='AAPL' order by timestamp limit 1"
        ).fetchone()[0]
    assert first_open == float(aapl["open"].iloc[0]) == 0.428393006324768


def test_latest_price(client: TestClient, aapl: pd.DataFrame) -> None:
    r = client.get("/price/aapl")
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["symbol"] == "AAPL"
    assert p["timestamp"].startswith(aapl.index[-1])
    assert p["price"] == aapl["close"].iloc[-1]
    assert p["previous_close"] == aapl["close"].iloc[-2]
    assert math.isclose(p["change"], aapl["close"].iloc[-1] - aapl["close"].iloc[-2])
    assert p["cache_level"] == "provider" and p["cached"] is False
    again = client.get("/price/AAPL").json()
    assert again["cached"] is True and again["cache_level"] == "l1"


@pytest.mark.parametrize("symbol,stem", [("^GSPC", "GSPC"), ("gspc", "GSPC")])
def test_index_symbol_maps_to_file(client: TestClient, csv_dir: Path, symbol: str, stem: str):
    r = client.get(f"/price/{symbol}")
    assert r.status_code == 200, r.text
    last = pd.read_csv(csv_dir / f"{stem}.csv").iloc[-1]
    assert r.json()["price"] == last["close"]


def test_indicator_window_equals_full_history(client: TestClient, aapl: pd.DataFrame) -> None:
    r = client.get(
        "/indicators/AAPL",
        params={"start": "2022-01-03", "end": "2022-12-30", "indicators": "rsi,macd,bbands"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    close = aapl["close"].to_numpy("float64")
    window = (aapl.index >= "2022-01-03") & (aapl.index <= "2022-12-30")
    assert [t[:10] for t in body["timestamps"]] == list(aapl.index[window])
    np.testing.assert_allclose(body["values"]["rsi"], talib.RSI(close, 14)[window], atol=1e-8)
    macd, signal, hist = talib.MACD(close, 12, 26, 9)
    np.testing.assert_allclose(body["values"]["macd"], macd[window], atol=1e-8)
    np.testing.assert_allclose(body["values"]["macd_signal"], signal[window], atol=1e-8)
    np.testing.assert_allclose(body["values"]["macd_histogram"], hist[window], atol=1e-8)
    up, _mid, _lo = talib.BBANDS(close, 20, 2, 2, 0)
    np.testing.assert_allclose(body["values"]["bbands_upper"], up[window], atol=1e-8)
    assert body["warmup_bars_used"] > 26


def test_sma_ema_atr_windows_equal_full_history(client: TestClient, aapl: pd.DataFrame) -> None:
    params = {"sma_period": 50, "ema_period": 200, "atr_period": 20}
    r = client.get(
        "/indicators/AAPL",
        params={"start": "2021-01-04", "end": "2022-12-30", "indicators": "sma,ema,atr", **params},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    high, low, close = (aapl[c].to_numpy("float64") for c in ("high", "low", "close"))
    window = (aapl.index >= "2021-01-04") & (aapl.index <= "2022-12-30")
    assert [t[:10] for t in body["timestamps"]] == list(aapl.index[window])
    assert list(body["values"]) == ["sma", "ema", "atr"]
    for name, ref in (
        ("sma", talib.SMA(close, 50)),
        ("ema", talib.EMA(close, 200)),
        ("atr", talib.ATR(high, low, close, 20)),
    ):
        np.testing.assert_allclose(body["values"][name], ref[window], rtol=0, atol=1e-8)
    assert body["parameters"] == {
        "sma": {"period": 50},
        "ema": {"period": 200},
        "atr": {"period": 20},
    }
    assert body["warmup_bars_used"] >= warmup_bars("ema", {"period": 200})
    # The default set is unchanged, and the new indicators get no latest-value route.
    default = client.get("/indicators/AAPL", params={"start": "2022-12-01"}).json()
    assert set(default["parameters"]) == {"rsi", "macd", "bbands", "williams_r", "stochastic"}
    assert client.get("/sma/AAPL").status_code == 404


def test_warmup_values_are_null_not_nan(client: TestClient) -> None:
    r = client.get("/indicators/AAPL", params={"start": "2003-10-30", "end": "2003-12-31"})
    assert r.status_code == 200, r.text
    values = r.json()["values"]
    assert values["rsi"][:14] == [None] * 14
    assert values["rsi"][14] is not None
    assert "NaN" not in r.text


def test_latest_indicators(client: TestClient, aapl: pd.DataFrame) -> None:
    close = aapl["close"].to_numpy("float64")
    high, low = aapl["high"].to_numpy("float64"), aapl["low"].to_numpy("float64")
    rsi = client.get("/rsi/AAPL").json()
    assert math.isclose(rsi["values"]["rsi"], talib.RSI(close, 14)[-1], abs_tol=1e-8)
    assert rsi["timestamp"].startswith(aapl.index[-1])
    rsi7 = client.get("/rsi/AAPL", params={"period": 7}).json()
    assert math.isclose(rsi7["values"]["rsi"], talib.RSI(close, 7)[-1], abs_tol=1e-8)
    wr = client.get("/williams_r/AAPL").json()
    assert math.isclose(
        wr["values"]["williams_r"], talib.WILLR(high, low, close, 14)[-1], abs_tol=1e-8
    )
    bb = client.get("/bollinger_bands/AAPL").json()
    assert math.isclose(
        bb["values"]["bbands_lower"], talib.BBANDS(close, 20, 2, 2, 0)[2][-1], abs_tol=1e-8
    )
    macd = client.get("/macd/AAPL").json()
    assert math.isclose(macd["values"]["macd_histogram"], talib.MACD(close)[2][-1], abs_tol=1e-8)


@pytest.mark.parametrize(
    "path,params,field",
    [
        ("/price/DROP%20TABLE", {}, "symbol"),
        ("/price/AAPL;rm", {}, "symbol"),
        ("/historical/AAPL", {"start": "2023-01-01", "end": "2022-01-01"}, "start"),
        ("/historical/AAPL", {"start": "1800-01-01", "end": "2022-01-01"}, "start"),
        ("/historical/AAPL", {"start": "2020-13-01"}, "start"),
        ("/historical/AAPL", {"end": "9999-01-01"}, "end"),
        ("/historical/AAPL", {"interval": "7m"}, "interval"),
        ("/indicators/AAPL", {"indicators": "rsi,foo"}, "indicators"),
        ("/indicators/AAPL", {"rsi_period": 0}, "rsi_period"),
        ("/indicators/AAPL", {"atr_period": 0}, "atr_period"),
        ("/indicators/AAPL", {"ema_period": 1.5}, "ema_period"),
        ("/indicators/AAPL", {"macd_fast": 30, "macd_slow": 26}, "macd_fast"),
        ("/macd/AAPL", {"fast": 26, "slow": 12}, "fast"),  # the route's own parameter
        ("/market_status", {"at": "not-a-time"}, "at"),
    ],
)
def test_bad_input_is_a_422_problem_naming_the_field(
    client: TestClient, path: str, params: dict, field: str
) -> None:
    r = client.get(path, params=params)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["status"] == 422
    assert problem["field"] == field
    assert "Traceback" not in r.text
    if path.startswith("/macd/"):  # the detail uses the route's names too
        assert "macd_" not in problem["detail"] and "fast" in problem["detail"]


def test_unknown_symbol_is_404(client: TestClient) -> None:
    r = client.get("/price/ZZZZZ")
    assert r.status_code == 404
    assert r.json()["code"] == "symbol_not_found"
    assert client.get("/historical/ZZZZZ", params={"start": "2020-01-01"}).status_code == 404


def test_real_tickers_are_accepted(client: TestClient) -> None:
    for symbol in ("BRK-B", "BRK.B", "EURUSD=X", "BTC-USD", "^GSPC"):
        r = client.get(f"/price/{symbol}")
        assert r.status_code in (200, 404), (symbol, r.text)
        if r.status_code == 404:
            assert r.json()["code"] == "symbol_not_found"


def test_bulk_fetch_isolates_failures(client: TestClient) -> None:
    r = client.post("/bulk_fetch", json={"symbols": ["AAPL", "NOPE1", "bad symbol!", "MSFT"]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["ok"] for x in results] == [True, False, False, True]
    assert results[1]["error"]["status"] == 404
    assert results[2]["error"]["status"] == 422
    assert r.json()["succeeded"] == 2


def test_bulk_fetch_historical(client: TestClient) -> None:
    r = client.post(
        "/bulk_fetch",
        json={
            "symbols": ["KO", "PG"],
            "kind": "historical",
            "start": "2023-01-01",
            "end": "2023-01-31",
        },
    )
    assert r.status_code == 200, r.text
    assert all(len(x["historical"]["bars"]) == 20 for x in r.json()["results"])


def test_bulk_fetch_rejects_bad_bodies(client: TestClient) -> None:
    assert client.post("/bulk_fetch", json={"symbols": []}).json()["field"] == "symbols"
    r = client.post(
        "/bulk_fetch", content=b"\xff\xfe", headers={"content-type": "application/json"}
    )
    assert r.status_code in (400, 422)


def test_market_status_at_known_instants(client: TestClient) -> None:
    open_ = client.get("/market_status", params={"at": "2026-11-24T15:00:00Z"}).json()
    assert open_["is_open"] is True
    assert "2026-11-26" in open_["upcoming_holidays"]  # Thanksgiving
    assert any(e["date"] == "2026-11-27" for e in open_["upcoming_early_closes"])
    closed = client.get("/market_status", params={"at": "2026-11-26T15:00:00Z"}).json()
    assert closed["is_open"] is False and closed["is_trading_day"] is False
    assert closed["next_open"].startswith("2026-11-27T14:30")
    assert closed["next_close"].startswith("2026-11-27T18:00")


def test_weekly_and_adjusted_bars(client: TestClient, aapl: pd.DataFrame) -> None:
    wk = client.get(
        "/historical/AAPL", params={"start": "2023-10-02", "end": "2023-10-27", "interval": "1wk"}
    ).json()
    assert [b["timestamp"][:10] for b in wk["bars"]] == [
        "2023-10-02",
        "2023-10-09",
        "2023-10-16",
        "2023-10-23",
    ]
    week = aapl.loc["2023-10-02":"2023-10-06"]
    assert wk["bars"][0]["high"] == week["high"].max()
    assert wk["bars"][0]["volume"] == week["volume"].sum()
    adj = client.get(
        "/historical/AAPL", params={"start": "2023-10-02", "end": "2023-10-06", "adjusted": True}
    ).json()
    assert math.isclose(adj["bars"][0]["close"], aapl.loc["2023-10-02", "adj_close"])


def make_csv(folder: Path, source: Path, symbol: str, mutate) -> None:
    frame = pd.read_csv(source, dtype={"date": str})
    mutate(frame).to_csv(folder / f"{symbol}.csv", index=False)


def test_bad_vendor_rows_are_rejected_and_never_stored(tmp_path: Path, csv_dir: Path) -> None:
    data = tmp_path / "csv"
    data.mkdir()

    def corrupt(f: pd.DataFrame) -> pd.DataFrame:
        f = f[(f.date >= "2022-01-01") & (f.date <= "2022-03-31")].copy()
        f.loc[f.index[5], "close"] = -1.0  # non-positive
        f.loc[f.index[9], "high"] = f.loc[f.index[9], "low"] / 2  # high < low
        f.loc[f.index[12], "open"] = float("nan")
        return f

    make_csv(data, csv_dir / "KO.csv", "KO", corrupt)
    db = tmp_path / "db"
    with TestClient(create_app(market_settings(db, data))) as c:
        r = c.get("/historical/KO", params={"start": "2022-01-01", "end": "2022-03-31"}).json()
    q = r["metadata"]["quality"]
    assert q["rejected_count"] == 3
    assert {x["reason"] for x in q["rejected"]} == {
        "non-positive price",
        "high below open/close/low",
        "missing price",
    }
    assert q["missing_sessions"] == 3 and q["ok"] is False
    assert stored_rows(db, "KO") == len(r["bars"])
    assert all(b["close"] > 0 for b in r["bars"])


def test_short_gaps_are_filled_only_on_request(tmp_path: Path, csv_dir: Path) -> None:
    data = tmp_path / "csv"
    data.mkdir()

    def drop(f: pd.DataFrame) -> pd.DataFrame:
        f = f[(f.date >= "2022-01-01") & (f.date <= "2022-03-31")]
        return f.drop(f.index[[10, 20, 21, 30, 31, 32]])  # gaps of 1, 2 and 3 sessions

    make_csv(data, csv_dir / "PG.csv", "PG", drop)
    with TestClient(create_app(market_settings(tmp_path / "db", data))) as c:
        params = {"start": "2022-01-01", "end": "2022-03-31"}
        plain = c.get("/historical/PG", params=params).json()
        filled = c.get("/historical/PG", params={**params, "fill_gaps": True}).json()
    assert [g["missing_sessions"] for g in plain["metadata"]["quality"]["gaps"]] == [1, 2, 3]
    assert "filled" not in plain["bars"][0]
    assert len(filled["bars"]) == len(plain["bars"]) + 3
    marked = [b for b in filled["bars"] if b["filled"]]
    assert len(marked) == 3 and filled["metadata"]["quality"]["filled_rows"] == 3
    assert all(b["volume"] == 0 and b["open"] == b["close"] for b in marked)


def test_market_service_never_imports_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from services.market.app import create_app; create_app(); "
        "import services.market.service, services.market.yahoo; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'xgboost')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_concurrent_requests_store_each_row_once(tmp_path: Path, csv_dir: Path) -> None:
    import httpx

    app = create_app(market_settings(tmp_path, csv_dir))

    async def go() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as h:
                rs = await asyncio.gather(
                    *(
                        h.get(
                            "/historical/JNJ", params={"start": "2019-01-01", "end": "2019-12-31"}
                        )
                        for _ in range(5)
                    )
                )
        return [r.status_code for r in rs]

    assert asyncio.run(go()) == [200] * 5
    assert stored_rows(tmp_path, "JNJ") == 252

"""`GET /features/{symbol}`: the 50 model features of a window, equal to full-history values."""

from __future__ import annotations

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from shared.quant.features import FEATURES, compute_features


def full_history(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the features of every bar of a CSV frame, computed on the whole history."""
    names, matrix = compute_features(
        frame["open"], frame["high"], frame["low"], frame["close"], frame["volume"], frame.index
    )
    return pd.DataFrame(matrix, index=frame.index, columns=names)


def test_a_window_equals_the_full_history_values(client: TestClient, aapl: pd.DataFrame) -> None:
    answer = client.get("/features/aapl", params={"start": "2015-01-01", "end": "2015-06-30"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    expected = full_history(aapl).loc["2015-01-01":"2015-06-30"]
    assert body["symbol"] == "AAPL"
    assert [t[:10] for t in body["timestamps"]] == list(expected.index)
    assert body["close"] == aapl.loc["2015-01-01":"2015-06-30", "close"].tolist()
    assert list(body["values"]) == list(FEATURES)
    got = pd.DataFrame(body["values"], index=expected.index, dtype=np.float64)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-12)
    assert body["warmup_bars_used"] >= max(spec.warmup for spec in FEATURES.values())
    assert body["cached"] is False
    again = client.get("/features/AAPL", params={"start": "2015-01-01", "end": "2015-06-30"})
    assert again.json()["cached"] is True and again.json()["values"] == body["values"]


def test_warm_up_rows_at_the_start_of_history_are_null(
    client: TestClient, aapl: pd.DataFrame
) -> None:
    first = aapl.index[0]
    body = client.get("/features/AAPL", params={"start": first, "end": "2004-06-30"}).json()
    assert body["timestamps"][0][:10] == first and body["warmup_bars_used"] == 0
    for name, spec in FEATURES.items():
        column = body["values"][name]
        assert all(v is None for v in column[: spec.lookback]), name
        assert all(v is not None for v in column[spec.lookback :]), name


def test_a_window_before_the_history_is_empty_and_bad_input_is_a_problem(
    client: TestClient,
) -> None:
    empty = client.get("/features/AAPL", params={"start": "1995-01-01", "end": "1995-12-31"})
    assert empty.status_code == 200
    assert empty.json()["timestamps"] == [] and empty.json()["values"]["ret_1"] == []
    unknown = client.get("/features/ZZZZ")
    assert unknown.status_code == 404 and unknown.json()["field"] == "symbol"
    reversed_ = client.get("/features/AAPL", params={"start": "2020-02-01", "end": "2020-01-01"})
    assert reversed_.status_code == 422 and reversed_.json()["field"] == "start"


def test_the_spec_describes_every_feature(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"]["/features/{symbol}"]["get"]
    assert operation["operationId"] == "get_features"
    for name, spec in FEATURES.items():
        assert f"`{name}`: {spec.description}" in operation["description"]

"""A 5xx answer says what failed in the user's terms and carries an error id; details are logged."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.market.app import create_app
from services.market.settings import SHARED_CSV_DIR
from tests.conftest import market_settings
from trading.cli import free_port


def test_a_database_outage_discloses_no_connection_details(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql+asyncpg://ledgeruser:pw@127.0.0.1:{port}/ledgerdb"
    settings = market_settings(tmp_path, SHARED_CSV_DIR, database_url=url)
    with caplog.at_level(logging.WARNING), TestClient(create_app(settings)) as client:
        # (a quote needs no database: the provider answers it; history needs the database)
        answer = client.get("/historical/AAPL", params={"start": "2023-01-03", "end": "2023-03-31"})
    assert answer.status_code == 503
    problem = answer.json()
    assert problem["code"] == "database_unavailable"
    for internal in ("ledgeruser", "ledgerdb", str(port), "127.0.0.1", "asyncpg"):
        assert internal not in answer.text
    assert re.fullmatch(r"[0-9a-f]{12}", problem["error_id"])
    logged = [r.getMessage() for r in caplog.records if problem["error_id"] in r.getMessage()]
    assert logged and "ledgerdb" in logged[0]  # the operator finds the details by the id
    assert "pw@" not in caplog.text  # and even there the password is masked


def test_client_errors_carry_no_error_id(tmp_path: Path) -> None:
    with TestClient(create_app(market_settings(tmp_path, SHARED_CSV_DIR))) as client:
        problem = client.get("/price/BAD!!").json()
    assert problem["status"] == 422 and "error_id" not in problem

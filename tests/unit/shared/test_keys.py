"""API keys are stored encrypted in a 0600 file, and never printed."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from typer.testing import CliRunner

from shared.keys import KeyStore, KeyStoreError
from trading.cli import app

SECRET = "sk_live_5up3r-s3cr3t-v4lue"


def test_keys_round_trip_encrypted_in_a_private_file(tmp_path: Path) -> None:
    master = SecretStr(Fernet.generate_key().decode())
    store = KeyStore(tmp_path, master)
    store.set("ALPACA_API_KEY", SecretStr(SECRET))
    store.set("POLYGON_KEY", SecretStr("other"))
    raw = store.path.read_bytes()
    assert SECRET.encode() not in raw and b"other" not in raw
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert KeyStore(tmp_path, master).get("ALPACA_API_KEY").get_secret_value() == SECRET
    assert [k.name for k in store.list()] == ["ALPACA_API_KEY", "POLYGON_KEY"]
    assert store.delete("POLYGON_KEY") and not store.delete("POLYGON_KEY")
    with pytest.raises(KeyStoreError, match="cannot be decrypted"):
        KeyStore(tmp_path, SecretStr(Fernet.generate_key().decode())).get("ALPACA_API_KEY")


def test_without_a_master_key_nothing_is_stored(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="TRADING_MASTER_KEY"):
        KeyStore(tmp_path, None).set("X", SecretStr(SECRET))  # no keyring backend in CI
    assert not (tmp_path / "keys.enc").exists()
    with pytest.raises(KeyStoreError, match="not a Fernet key"):
        KeyStore(tmp_path, SecretStr("too-short")).set("X", SecretStr(SECRET))


def test_cli_never_prints_or_logs_a_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TRADING_MASTER_KEY", Fernet.generate_key().decode())
    runner = CliRunner()
    caplog.set_level(logging.DEBUG)
    outputs = [
        runner.invoke(app, ["keys", "set", "BROKER_KEY", "--stdin"], input=SECRET + "\n"),
        runner.invoke(app, ["keys", "list"]),
        runner.invoke(app, ["keys", "delete", "BROKER_KEY"]),
        runner.invoke(app, ["keys", "delete", "BROKER_KEY"]),
    ]
    assert [r.exit_code for r in outputs] == [0, 0, 0, 1]
    assert "BROKER_KEY" in outputs[1].output
    assert "no key named" in outputs[3].output
    everything = "".join(r.output for r in outputs) + caplog.text
    assert SECRET not in everything

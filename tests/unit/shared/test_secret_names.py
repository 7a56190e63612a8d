"""Every setting whose name holds KEY, SECRET, TOKEN or PASSWORD is masked in the logs,
however it is written: its environment name (prefixed: `GATEWAY_TOKEN=`), its field name,
in JSON; and the names other tools use for their credentials (`ALPACA_SECRET_KEY=`)."""

from __future__ import annotations

import logging

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from gateway_mcp.settings import GatewaySettings
from services.backtest.settings import BacktestSettings
from services.market.settings import MarketSettings
from services.predictor.settings import PredictorSettings
from shared.config import BaseServiceSettings
from shared.logging import MaskingFormatter, mask_secrets

SETTINGS: list[type[BaseSettings]] = [
    BaseServiceSettings,
    MarketSettings,
    BacktestSettings,
    PredictorSettings,
    GatewaySettings,
]
SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD")
# Credentials the platform reads or passes on under names of their own.
OTHER_NAMES = [
    "ALPACA_API_KEY",
    "ALPACA_SECRET_KEY",
    "POSTGRES_PASSWORD",
    "API_TOKEN",
    "GATEWAY_TOKEN",
    "SERVICE_TOKEN",
]
VALUE = "Zq9xSecretValue42"


def setting_names(settings: type[BaseSettings]) -> set[str]:
    """Return every name a setting is read under: field, environment name and aliases."""
    prefix = str(settings.model_config.get("env_prefix") or "")
    names: set[str] = set()
    for field, info in settings.model_fields.items():
        names |= {field, (prefix + field).upper()}
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {a for a in alias.choices if isinstance(a, str)}
        elif isinstance(alias, str):
            names.add(alias)
    return names


def secret_names() -> list[str]:
    """Return every setting name (of every settings class) that names a secret."""
    names = set(OTHER_NAMES)
    for settings in SETTINGS:
        names |= {n for n in setting_names(settings) if any(w in n.upper() for w in SECRET_WORDS)}
    return sorted(names)


def test_the_settings_have_secrets_to_mask() -> None:
    names = secret_names()
    # the derivation finds the settings it must: prefixed environment names among them
    for expected in ("API_TOKEN", "GATEWAY_TOKEN", "TRADING_MASTER_KEY", "BACKTEST_MARKET_TOKEN"):
        assert expected in names


@pytest.mark.parametrize("name", secret_names())
@pytest.mark.parametrize(
    "template",
    [
        "{name}={value}",
        "{name}: {value}",
        '"{name}": "{value}"',
        "{name}='{value}' next",
        "x {name} = {value}",
    ],
)
def test_every_secret_setting_is_masked(name: str, template: str) -> None:
    for written in (name, name.lower()):
        line = "starting with " + template.format(name=written, value=VALUE)
        masked = mask_secrets(line)
        assert VALUE not in masked, masked
        assert written in masked  # the name stays: the reader sees which setting it was


def test_a_logged_environment_is_masked_through_the_formatter() -> None:
    env = " ".join(f"{n}={VALUE}{i}" for i, n in enumerate(OTHER_NAMES))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "env: %s", (env,), None)
    text = MaskingFormatter("%(message)s").format(record)
    assert VALUE not in text
    assert text.count("***") == len(OTHER_NAMES)


def test_ordinary_words_are_left_alone() -> None:
    line = "GET /price/AAPL 200 in 4 ms; symbols=AAPL,KO; monkey business"
    assert mask_secrets(line) == line

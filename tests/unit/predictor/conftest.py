"""Fixtures of the predictor's model tests: real AAPL features and one tiny trained ensemble."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest

from services.predictor.ml.lstm import LSTMConfig
from services.predictor.ml.training import EnsembleModel, SeriesData, TrainConfig, train_ensemble
from services.predictor.ml.xgboost_model import XGBoostConfig
from shared.quant.features import FEATURE_NAMES, compute_features

# Small shapes: the full-size figures belong to bench/predictor.py.
TINY_LSTM = LSTMConfig(
    seq_len=10,
    lstm_units=(8, 8, 4),
    attention_heads=2,
    key_dim=4,
    dense_units=(8, 4),
    epochs=2,
    batch_size=64,
    patience=2,
)
TINY = TrainConfig(lstm=TINY_LSTM, xgboost=XGBoostConfig(n_estimators=20), seed=7)


def series_of(frame: pd.DataFrame, symbol: str, bars: int = 700) -> SeriesData:
    """Return the last `bars` bars of a CSV frame (indexed by date) as model input."""
    part = frame.iloc[-bars:]
    _, matrix = compute_features(
        part["open"], part["high"], part["low"], part["close"], part["volume"], part.index
    )
    dates = pd.to_datetime(part.index).to_numpy()
    return SeriesData(symbol, matrix, part["close"].to_numpy(np.float64), dates)


@pytest.fixture(scope="session")
def aapl_series(aapl: pd.DataFrame) -> SeriesData:
    """Return AAPL's last 700 daily bars as features, closes and dates."""
    return series_of(aapl, "AAPL")


@dataclass
class Trained:
    """A trained tiny ensemble and the progress reports its training sent."""

    model: EnsembleModel
    reports: list[tuple[float, float, str]] = field(default_factory=list)


@pytest.fixture(scope="session")
def trained(aapl_series: SeriesData) -> Trained:
    """Train the tiny LSTM + XGBoost ensemble on AAPL once for the session."""
    reports: list[tuple[float, float, str]] = []
    model = train_ensemble(
        aapl_series,
        TINY,
        feature_names=FEATURE_NAMES,
        report=lambda done, total, message: reports.append((done, total, message)),
    )
    return Trained(model, reports)

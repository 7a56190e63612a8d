"""The members and the trained ensemble: the seed's shapes, determinism, portable bytes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from services.predictor.ml.lstm import LSTMConfig, LSTMMember, build_model
from services.predictor.ml.lstm_inference import LSTMInference
from services.predictor.ml.training import EnsembleModel, SeriesData, TrainConfig, train_ensemble
from services.predictor.ml.types import TrainingCancelledError
from services.predictor.ml.xgboost_model import XGBoostConfig
from shared.quant.features import FEATURE_NAMES
from tests.unit.predictor.conftest import TINY, Trained, series_of

XGB_ONLY = replace(TINY, models=("xgboost",))


def test_importing_the_ml_package_loads_neither_tensorflow_nor_xgboost() -> None:
    code = (
        "import sys\n"
        "import services.predictor.ml, services.predictor.ml.training\n"
        "import services.predictor.ml.lstm, services.predictor.ml.xgboost_model\n"
        "import services.predictor.ml.online, services.predictor.ml.lstm_inference\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'xgboost') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == ""


def test_tensorflow_loads_quietly() -> None:
    code = (
        "from services.predictor.ml.lstm import LSTMConfig, build_model\n"
        "import numpy as np\n"
        "model = build_model(LSTMConfig(seq_len=4, lstm_units=(2,), dense_units=()), 3)\n"
        "print(model(np.zeros((1, 4, 3), np.float32)).shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "ABSL"))}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=240, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    for noise in ("cpu_feature_guard", "oneDNN", "absl::InitializeLog", "rebuild TensorFlow"):
        assert noise not in out.stderr


def test_the_full_size_lstm_is_the_seeds() -> None:
    model = build_model(LSTMConfig(), len(FEATURE_NAMES))
    assert model.input_shape == (None, 60, 50)
    assert model.output_shape == (None, 3)
    assert model.count_params() == 308_515
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("LSTM") == 3
    lstms = [layer for layer in model.layers if type(layer).__name__ == "LSTM"]
    assert [layer.units for layer in lstms] == [128, 128, 64]
    drops = [layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"]
    assert drops == pytest.approx([0.2, 0.2, 0.2, 0.3])
    attention = model.get_layer("attention")
    assert (attention.num_heads, attention.key_dim) == (8, 16)
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert [layer.units for layer in dense] == [32, 16, 3]
    assert dense[-1].activation.__name__ == "softmax"
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_xgboost_runs_the_seeds_configuration() -> None:
    params = XGBoostConfig().params(seed=3)
    assert params == {
        "objective": "multi:softprob",
        "num_class": 3,
        "max_depth": 6,
        "eta": 0.01,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "min_child_weight": 1.0,
        "gamma": 0.0,
        "alpha": 0.1,
        "lambda": 1.0,
        "tree_method": "hist",
        "device": "cpu",
        "nthread": 1,
        "seed": 3,
        "eval_metric": "mlogloss",
    }
    assert XGBoostConfig().n_estimators == 100


def test_training_reports_progress_per_epoch_and_member(trained: Trained) -> None:
    reports = trained.reports
    done = [r[0] for r in reports]
    assert done == sorted(done)
    total = TINY.lstm.epochs + 10 + 1
    assert {r[1] for r in reports} == {total}
    assert reports[-1][0] == total
    messages = [r[2] for r in reports]
    assert next(x for x in messages if x.startswith("lstm: epoch")).startswith("lstm: epoch 1/2")
    assert sum(x.startswith("xgboost: tree") for x in messages) == 10
    assert "lstm: trained" in messages and "xgboost: trained" in messages


def test_the_model_is_evaluated_against_the_baselines(trained: Trained) -> None:
    model = trained.model
    for segment in ("validation", "test"):
        figures = model.metrics[segment]
        assert figures["rows"] > 50
        for who in ("lstm", "xgboost", "ensemble"):
            assert 0.0 <= figures[who]["accuracy"] <= 1.0
            test = figures["comparisons"][who]
            assert figures["beats_baselines"][who] == (test["verdict"] == "beats")
            assert test["n"] == figures["rows"]
            assert set(test["baselines"]) == {"majority", "previous"}
        assert set(figures["baselines"]) == {"majority", "previous"}
        # climatology: the training class frequencies on every row, a probabilistic baseline
        freq = np.asarray(model.info["class_frequencies"])
        assert freq.sum() == pytest.approx(1.0)
        assert figures["climatology"]["accuracy"] == figures["baselines"]["majority"]["accuracy"]
    info = model.info
    assert sum(info["train_class_counts"]) == info["rows"]["train"]
    # the scaler saw training rows only
    seg = info["segments"]["AAPL"]
    assert seg["train"]["last"] < seg["validation"]["first"] < seg["test"]["first"]


def test_the_scaler_is_fitted_on_training_rows_only(
    trained: Trained, aapl_series: SeriesData
) -> None:
    model = trained.model
    bounds = model.info["segments"]["AAPL"]["train"]
    dates = aapl_series.timestamps
    first, last = (np.searchsorted(dates, np.datetime64(bounds[k])) for k in ("first", "last"))
    rows = np.arange(first, last + 1)
    assert rows.size == model.info["rows"]["train"]
    np.testing.assert_allclose(model.scaler.mean, aapl_series.features[rows].mean(axis=0))


def test_predictions_carry_members_and_weights(trained: Trained, aapl_series: SeriesData) -> None:
    out = trained.model.predict(aapl_series.features)
    row = out.row()
    assert row["direction"] in ("down", "neutral", "up")
    assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    weights = {k: v["weight"] for k, v in row["members"].items()}
    degenerate = trained.model.info["degenerate"]
    if not degenerate or len(degenerate) == 2:
        assert weights == {"lstm": 0.5, "xgboost": 0.5}
    else:  # a member that calls one class on every validation bar weighs nothing
        assert all(weights[k] == 0.0 for k in degenerate)
        assert all(trained.model.ensemble.reasons[k].startswith("degenerate") for k in degenerate)
    with pytest.raises(ValueError):
        trained.model.predict(aapl_series.features, rows=[60])  # inside the warm-up
    with pytest.raises(ValueError):
        trained.model.predict(aapl_series.features[:, :10])


def test_inference_runs_one_compiled_function(trained: Trained, aapl_series: SeriesData) -> None:
    lstm = trained.model.members["lstm"]
    assert isinstance(lstm, LSTMMember)
    fn = lstm._compiled.predict
    for rows in ([699], [600, 650], list(range(300, 700))):
        trained.model.predict(aapl_series.features, rows=rows)
    assert fn.experimental_get_tracing_count() == 1


def test_prepared_inference_gives_the_same_bits_through_one_unrolled_function(
    trained: Trained, aapl_series: SeriesData
) -> None:
    model = EnsembleModel.from_artifacts(trained.model.to_artifacts(), trainable=True)
    lstm = model.members["lstm"]  # the Keras model, not prepared yet
    assert isinstance(lstm, LSTMMember) and not lstm.prepared
    cases = ([699], [650, 699], list(range(300, 700)))
    looped = [model.predict(aapl_series.features, rows=rows) for rows in cases]
    model.prepare()
    assert lstm.prepared
    for rows, before in zip(cases, looped, strict=True):
        after = model.predict(aapl_series.features, rows=rows)
        np.testing.assert_array_equal(after.members["lstm"], before.members["lstm"])
        np.testing.assert_array_equal(after.probabilities, before.probabilities)
    noise = np.random.default_rng(5).normal(0, 3, (33, TINY.lstm.seq_len, lstm.n_features))
    np.testing.assert_array_equal(
        lstm.predict_proba(noise), np.asarray(lstm._compiled.predict(noise.astype(np.float32)))
    )
    assert lstm._compiled.fast.experimental_get_tracing_count() == 1
    # the unrolled trace leaves the model as it was: the saved network still loops
    with zipfile.ZipFile(io.BytesIO(lstm.to_bytes())) as keras_zip:
        layers = json.loads(keras_zip.read("config.json"))["config"]["layers"]
    assert [x["config"]["unroll"] for x in layers if x["class_name"] == "LSTM"] == [False] * 3


def test_a_loaded_model_is_prepared_in_the_background(trained: Trained) -> None:
    model = EnsembleModel.from_artifacts(trained.model.to_artifacts(), trainable=True)
    lstm = model.members["lstm"]
    assert isinstance(lstm, LSTMMember)
    pending = lstm.prepare(wait=False)
    assert pending is not None
    pending.result(timeout=300)
    assert lstm.prepared and lstm.prepare(wait=False) is None


def test_saved_bytes_are_portable_and_load_to_identical_predictions(
    trained: Trained, aapl_series: SeriesData
) -> None:
    artifacts = trained.model.to_artifacts()
    assert set(artifacts) == {"state.json", "lstm.keras", "xgboost.ubj"}
    state = json.loads(artifacts["state.json"])
    assert state["feature_names"] == list(FEATURE_NAMES)
    with zipfile.ZipFile(io.BytesIO(artifacts["lstm.keras"])) as keras_zip:
        assert {"config.json", "model.weights.h5"} <= set(keras_zip.namelist())
    assert artifacts["xgboost.ubj"][:1] == b"{"  # a UBJSON object, not a pickle
    rows = np.arange(100, 700)
    before = trained.model.predict(aapl_series.features, rows)
    loaded = EnsembleModel.from_artifacts(artifacts, trainable=True)  # Keras again
    after = loaded.predict(aapl_series.features, rows)
    np.testing.assert_array_equal(after.probabilities, before.probabilities)
    for name in ("lstm", "xgboost"):
        np.testing.assert_array_equal(after.members[name], before.members[name])
    assert loaded.metrics == trained.model.metrics
    served = EnsembleModel.from_artifacts(artifacts)  # the LSTM in numpy
    assert isinstance(served.members["lstm"], LSTMInference)
    assert served.to_artifacts() == artifacts
    after = served.predict(aapl_series.features, rows)
    np.testing.assert_allclose(after.members["lstm"], before.members["lstm"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(after.members["xgboost"], before.members["xgboost"])
    np.testing.assert_allclose(after.probabilities, before.probabilities, rtol=0, atol=1e-6)


def test_the_same_data_config_and_seed_give_the_same_models(
    trained: Trained, aapl_series: SeriesData
) -> None:
    again = train_ensemble(aapl_series, TINY, feature_names=FEATURE_NAMES)
    first, second = trained.model.to_artifacts(), again.to_artifacts()
    assert second["xgboost.ubj"] == first["xgboost.ubj"]
    assert second["state.json"] == first["state.json"]
    a, b = trained.model.members["lstm"], again.members["lstm"]
    assert isinstance(a, LSTMMember) and isinstance(b, LSTMMember)
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    rows = np.arange(100, 700)
    np.testing.assert_array_equal(
        again.predict(aapl_series.features, rows).probabilities,
        trained.model.predict(aapl_series.features, rows).probabilities,
    )


def test_another_seed_gives_another_model(aapl_series: SeriesData) -> None:
    one = train_ensemble(aapl_series, XGB_ONLY)
    other = train_ensemble(aapl_series, replace(XGB_ONLY, seed=8))
    assert one.to_artifacts()["xgboost.ubj"] != other.to_artifacts()["xgboost.ubj"]


def test_several_symbols_train_on_common_dates(aapl_series: SeriesData, csv_dir) -> None:  # type: ignore[no-untyped-def]

    msft = series_of(
        pd.read_csv(csv_dir / "MSFT.csv", dtype={"date": str}).set_index("date"), "MSFT", 500
    )
    model = train_ensemble([aapl_series, msft], XGB_ONLY)
    seg = model.info["segments"]
    assert seg["AAPL"]["validation"]["first"] == seg["MSFT"]["validation"]["first"]
    assert seg["AAPL"]["test"]["first"] == seg["MSFT"]["test"]["first"]
    assert (
        model.info["rows"]["train"] == seg["AAPL"]["train"]["rows"] + seg["MSFT"]["train"]["rows"]
    )
    out = model.predict(msft.features)
    assert out.probabilities.shape == (1, 3)


def test_cancellation_stops_training(aapl_series: SeriesData) -> None:
    calls = {"n": 0}

    def cancel_after_five() -> bool:
        calls["n"] += 1
        return calls["n"] > 5

    with pytest.raises(TrainingCancelledError):
        train_ensemble(aapl_series, XGB_ONLY, cancel=cancel_after_five)
    assert calls["n"] == 6  # checked once before training, then after each tree
    x = np.zeros((8, TINY.lstm.seq_len, 3), dtype=np.float32)
    with pytest.raises(TrainingCancelledError):
        LSTMMember.train(x, np.zeros(8), config=TINY.lstm, cancel=lambda: True)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError):
        TrainConfig(models=("lstm", "forest"))
    with pytest.raises(ValueError):
        TrainConfig(horizon=0)
    with pytest.raises(ValueError):
        LSTMConfig(dropout=1.0)
    with pytest.raises(ValueError):
        XGBoostConfig(nthread=0)
    assert TrainConfig.from_dict(TINY.to_dict()) == TINY

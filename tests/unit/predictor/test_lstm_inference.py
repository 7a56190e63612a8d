"""The LSTM's numpy forward pass: Keras' probabilities within 1e-6, and no TensorFlow.

Serving reads a version's ``lstm.keras`` with h5py and runs the network in numpy; these
tests compare it with Keras on the seed's full architecture (random weights large enough to
saturate gates and sharpen the attention) and on the tiny trained model, and load a stored
version in a fresh interpreter that must not import TensorFlow or Keras.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.predictor.ml.lstm import LSTMConfig, LSTMMember, build_model
from services.predictor.ml.lstm_inference import LSTMInference
from services.predictor.ml.training import SeriesData
from tests.unit.predictor.conftest import TINY, Trained


def test_the_seed_architecture_matches_keras_within_1e_6() -> None:
    config = LSTMConfig()
    model = build_model(config, 50)
    rng = np.random.default_rng(11)
    weights = [1.5 * w.numpy() + rng.normal(0.0, 0.05, w.shape) for w in model.weights]
    model.set_weights([w.astype(np.float32) for w in weights])  # Keras' init, sharpened
    keras_member = LSTMMember(model, config)
    numpy_member = LSTMInference.from_bytes(keras_member.to_bytes(), config)
    assert numpy_member.parameters == keras_member.parameters == 308_515
    windows = rng.normal(0.0, 1.5, (40, config.seq_len, 50))
    expected = keras_member.predict_proba(windows)
    got = numpy_member.predict_proba(windows)
    assert expected.min() < 0.05 and expected.max() > 0.8  # confident calls, not all ~1/3
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-12)
    one = numpy_member.predict_proba(windows[-1:])  # one window alone gives the same row
    np.testing.assert_allclose(one, got[-1:], rtol=0, atol=1e-12)


def test_the_trained_tiny_model_matches_keras_within_1e_6(trained: Trained) -> None:
    keras_member = trained.model.members["lstm"]
    assert isinstance(keras_member, LSTMMember)
    numpy_member = LSTMInference.from_bytes(keras_member.to_bytes(), TINY.lstm, 2)
    windows = np.random.default_rng(3).normal(0.0, 3.0, (1300, TINY.lstm.seq_len, 50))
    np.testing.assert_allclose(
        numpy_member.predict_proba(windows), keras_member.predict_proba(windows), atol=1e-6
    )
    assert numpy_member.predict_proba(windows[:0]).shape == (0, 3)
    with pytest.raises(ValueError, match="windows must be"):
        numpy_member.predict_proba(windows[:, :, :10])


def test_a_file_of_another_architecture_is_refused(trained: Trained) -> None:
    data = trained.model.members["lstm"].to_bytes()
    for other in (
        replace(TINY.lstm, lstm_units=(8, 8, 8)),
        replace(TINY.lstm, lstm_units=(8, 8)),
        replace(TINY.lstm, attention_heads=4),
        replace(TINY.lstm, dense_units=(8,)),
    ):
        with pytest.raises(ValueError):
            LSTMInference.from_bytes(data, other)


LOAD_SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
from services.predictor.ml.training import EnsembleModel

folder = Path(sys.argv[1])
artifacts = {p.name: p.read_bytes() for p in (folder / "artifacts").iterdir()}
model = EnsembleModel.from_artifacts(artifacts)
out = model.predict(np.load(folder / "features.npy"), np.load(folder / "rows.npy"))
np.save(folder / "lstm.npy", out.members["lstm"])
heavy = [m for m in ("tensorflow", "keras") if m in sys.modules]
print(json.dumps({"heavy": heavy, "member": type(model.members["lstm"]).__name__}))
"""


def test_a_stored_version_predicts_in_a_fresh_process_without_tensorflow(
    trained: Trained, aapl_series: SeriesData, tmp_path: Path
) -> None:
    (tmp_path / "artifacts").mkdir()
    for name, data in trained.model.to_artifacts().items():  # as the registry stores them
        (tmp_path / "artifacts" / name).write_bytes(data)
    rows = np.arange(100, 700)
    np.save(tmp_path / "features.npy", aapl_series.features)
    np.save(tmp_path / "rows.npy", rows)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOAD_SCRIPT), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"heavy": [], "member": "LSTMInference"}
    keras_lstm = trained.model.predict(aapl_series.features, rows).members["lstm"]
    np.testing.assert_allclose(np.load(tmp_path / "lstm.npy"), keras_lstm, rtol=0, atol=1e-6)

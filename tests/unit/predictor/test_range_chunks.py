"""A long range of calls is predicted in bounded chunks (issue 14, section 1): the same
probabilities as one call over every row, never more than a chunk of windows at once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from services.predictor.service import predict_in_chunks
from tests.unit.predictor.conftest import SeriesData, Trained


def test_a_range_is_predicted_chunk_by_chunk_with_the_same_calls(
    trained: Trained, aapl_series: SeriesData
) -> None:
    model = trained.model
    x = aapl_series.features
    rows = np.arange(x.shape[0] - 400, x.shape[0])  # past the features' warm-up
    whole = model.predict(x, rows)
    sizes: list[int] = []
    real = model.predict

    def recording(features: Any, at: Any = None) -> Any:
        sizes.append(len(at))
        return real(features, at)

    probs, weights = predict_in_chunks(recording, x, rows, chunk=100)

    assert max(sizes) <= 100 and sum(sizes) == rows.size and len(sizes) > 1
    np.testing.assert_allclose(probs, whole.probabilities, rtol=1e-6, atol=1e-9)
    assert weights == pytest.approx(whole.weights)

"""Training requests stay within what a two-core machine finishes (issue 14, section 4):
the schema maxima that let one request queue hours of work are refused, naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.backtest.strategies import MlTraining
from services.predictor.schemas import TrainRequest


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"symbols": [f"S{i}" for i in range(10)]}, "symbols"),
        ({"lstm": {"epochs": 500}}, "epochs"),
        ({"lstm": {"batch_size": 8}}, "batch_size"),
        ({"lstm": {"patience": 100}}, "patience"),
    ],
)
def test_a_training_at_the_old_maxima_is_refused(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        TrainRequest.model_validate(changes)

    assert field in {str(part) for e in refused.value.errors() for part in e["loc"]}


def test_a_walk_forwards_training_at_the_old_maxima_is_refused() -> None:
    with pytest.raises(ValidationError):
        MlTraining.model_validate({"epochs": 500})
    with pytest.raises(ValidationError):
        MlTraining.model_validate({"batch_size": 8})


def test_the_new_maxima_are_accepted() -> None:
    body = {"symbols": ["A", "B", "C", "D", "E"], "lstm": {"epochs": 200, "patience": 50}}

    assert TrainRequest.model_validate(body).lstm.epochs == 200

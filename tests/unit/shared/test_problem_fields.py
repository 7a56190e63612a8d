"""A 422 names the field as the client's JSON has it: a discriminated union's tag and
validator names are not part of the path; list items are `name[i]`."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field, field_validator

from shared.api import install_error_handlers


class Fast(BaseModel):
    fast: int = Field(ge=2)
    slow: int = 30

    @field_validator("slow")
    @classmethod
    def _after(cls, v: int, info: object) -> int:
        if v <= getattr(info, "data", {}).get("fast", 0):
            raise ValueError("slow must be greater than fast")
        return v


class Sma(BaseModel):
    name: Literal["sma"]
    params: Fast


class Hold(BaseModel):
    name: Literal["hold"]


class Body(BaseModel):
    strategy: Annotated[Sma | Hold, Field(discriminator="name")]
    symbols: list[Annotated[str, Field(pattern=r"^[A-Z]+$")]] = []
    grid: dict[str, list[int]] = {}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/run")
    async def run(body: Body) -> dict[str, str]:
        return {"ok": "yes"}

    return TestClient(app)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"strategy": {"name": "sma", "params": {"fast": 1}}}, "strategy.params.fast"),
        ({"strategy": {"name": "sma", "params": {"fast": 20, "slow": 10}}}, "strategy.params.slow"),
        ({"strategy": {"name": "sma"}}, "strategy.params"),
        ({"strategy": {"name": "nope"}}, "strategy"),
        ({"strategy": {"name": "hold"}, "symbols": ["KO", "bad"]}, "symbols[1]"),
        ({"strategy": {"name": "hold"}, "grid": {"fast": [1, "x"]}}, "grid.fast[1]"),
        ({}, "strategy"),
    ],
)
def test_a_problem_names_the_json_path_of_the_bad_value(
    client: TestClient, body: dict[str, object], field: str
) -> None:
    answer = client.post("/run", json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field

"""Contract-test helpers: every operation of a committed spec, fuzzed against its app."""

from __future__ import annotations

import json

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.contract.schemathesis_hooks import (
    positive_data_acceptance_but_documented_cross_field_rules,
)
from trading.openapi import OPENAPI_DIR

# Every check runs. "Schema-valid data must be accepted" runs as the CLI runs it
# (tests/contract/schemathesis_hooks.py): only a 422 on a cross-field rule the operation
# documents (start <= end, fast < slow) is allowed; every other bound (dates within
# 1900-2099, ...) is stated in the schema itself.
EXCLUDED_CHECKS = [positive_data_acceptance]
ADDITIONAL_CHECKS = [positive_data_acceptance_but_documented_cross_field_rules]


def committed_operations(service: str) -> list[pytest.ParameterSet]:
    """Return one pytest parameter per operation of openapi/<service>.json: (path, method)."""
    spec = json.loads((OPENAPI_DIR / f"{service}.json").read_text(encoding="utf-8"))
    return [
        pytest.param(path, method.upper(), id=f"{method.upper()} {path}")
        for path, methods in sorted(spec["paths"].items())
        for method in sorted(methods)
    ]


def fuzz_operation(
    schema: schemathesis.BaseSchema, path: str, method: str, *, max_examples: int = 100
) -> None:
    """Run schemathesis' generated cases for one operation and validate every answer."""
    operation = schema[path][method]

    @given(data=st.data())
    @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck))
    def run(data: st.DataObject) -> None:
        case = data.draw(operation.as_strategy())
        case.call_and_validate(excluded_checks=EXCLUDED_CHECKS, additional_checks=ADDITIONAL_CHECKS)

    run()

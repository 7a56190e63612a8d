"""Schemathesis CLI hooks (`SCHEMATHESIS_HOOKS=tests.contract.schemathesis_hooks`).

One check replaces a built-in one (run with `--checks all --exclude-checks
positive_data_acceptance`); every other check, `use_after_free` included, runs unchanged:
a schema-valid request must be accepted, except when the service answers 422 for a rule
across inputs that the operation documents in its `x-cross-field-rules` extension
(start <= end, fast < slow) and the problem names only fields of those rules (or parts of
them: `param_grid.fast` is part of `param_grid`).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

CROSS_FIELD_KEY = "x-cross-field-rules"  # shared.rules.CROSS_FIELD_KEY


def documented_fields(case: Any) -> set[str]:
    """Return the inputs named by the operation's documented cross-field rules."""
    rules = case.operation.definition.raw.get(CROSS_FIELD_KEY) or []
    return {field for rule in rules for field in rule.get("fields", [])}


def _json(response: Any) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def problem_fields(response: Any) -> set[str]:
    """Return the fields a problem-details answer blames (its `field` and `errors`)."""
    problem = _json(response)
    if not isinstance(problem, dict):
        return set()
    fields = {problem.get("field")} | {e.get("field") for e in problem.get("errors") or []}
    return {f for f in fields if isinstance(f, str)}


def within(field: str, documented: set[str]) -> bool:
    """Return whether field is a documented one or inside it (`param_grid.fast` is inside
    `param_grid`, `symbols[1]` inside `symbols`)."""
    return any(field == d or field.startswith((f"{d}.", f"{d}[")) for d in documented)


@schemathesis.check
def positive_data_acceptance_but_documented_cross_field_rules(
    ctx: Any, response: Any, case: Any
) -> bool | None:
    """Schema-valid requests are accepted, but for a 422 on a documented cross-field rule."""
    if response.status_code == 422:
        blamed = problem_fields(response)
        documented = documented_fields(case)
        if blamed and all(within(f, documented) for f in blamed):
            return None
    return positive_data_acceptance(ctx, response, case)  # type: ignore[no-any-return]

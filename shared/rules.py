"""Input rules stated in the OpenAPI schema and enforced exactly as stated, in plain words.

A `pattern` in a FastAPI parameter makes the spec precise but answers a bare "String should
match pattern '^...$'". :class:`TextRule` puts the pattern (and a format) into the JSON
schema and checks the raw text against the same pattern before the value is parsed, with
its own explanation as the message, so the 422 problem names the field and says the rule:

    Symbol = Annotated[str, TextRule(SYMBOL_PATTERN, "expected a ticker such as AAPL")]
    Day = Annotated[date, TextRule(DATE_PATTERN, "expected YYYY-MM-DD", json_format="date")]

Rules that span fields (start <= end, fast < slow) cannot be put in a JSON schema. Declare
them with :func:`cross_field_rules`: they are listed in the operation's description (which
the MCP tool descriptions are made from) and in its `x-cross-field-rules` extension, the
only 422 answers the contract tests accept for schema-valid requests.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

CROSS_FIELD_KEY = "x-cross-field-rules"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class TextRule:
    """Annotated metadata: the value's text must match pattern; explain says how, on a 422."""

    pattern: str
    explain: str
    json_format: str | None = None

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        """Check the raw text against the pattern, then validate as the annotated type."""
        regex = re.compile(self.pattern)
        explain = self.explain

        def check(value: Any) -> Any:
            if not isinstance(value, str) or regex.fullmatch(value) is None:
                raise PydanticCustomError("text_rule", explain)
            return value

        return core_schema.no_info_before_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """State the pattern (and the format) in the JSON schema."""
        json_schema = handler.resolve_ref_schema(handler(schema))
        json_schema["type"] = "string"
        json_schema["pattern"] = self.pattern
        if self.json_format is not None:
            json_schema["format"] = self.json_format
        return json_schema


@dataclass(frozen=True)
class CrossFieldRule:
    """A rule over several inputs that a JSON schema cannot express."""

    fields: tuple[str, ...]
    rule: str


def _described(description: str, rules: tuple[CrossFieldRule, ...]) -> str:
    lines = "\n".join(f"- {r.rule} (else 422 naming `{r.fields[0]}`)" for r in rules)
    return f"{inspect.cleandoc(description)}\n\nRules across inputs:\n{lines}"


def rules_extension(*rules: CrossFieldRule) -> dict[str, Any]:
    """Return the `openapi_extra` that lists rules in the `x-cross-field-rules` extension."""
    return {CROSS_FIELD_KEY: [{"fields": list(r.fields), "rule": r.rule} for r in rules]}


def documents_rules(*rules: CrossFieldRule) -> Callable[[F], F]:
    """Decorate a route function (under its `@router.post(..., openapi_extra=
    rules_extension(*rules))`) so its docstring, the operation's description, lists rules."""

    def decorate(fn: F) -> F:
        fn.__doc__ = _described(fn.__doc__ or "", rules)
        return fn

    return decorate


def cross_field_rules(description: str, *rules: CrossFieldRule) -> dict[str, Any]:
    """Return route keyword arguments documenting rules: the description and the extension."""
    return {
        "description": _described(description, rules),
        "openapi_extra": rules_extension(*rules),
    }


# A calendar date YYYY-MM-DD from 1900-01-01 to 2099-12-31 (the format rules out 2023-02-30).
DATE_1900_2099 = TextRule(
    r"^(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$",
    "expected a date YYYY-MM-DD from 1900-01-01 to 2099-12-31",
    json_format="date",
)

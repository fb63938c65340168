"""A compiled record validator that rejects exactly what singer-sdk's default validator rejects.

singer-sdk validates each record with `jsonschema`'s Draft 2020-12 validator, format checking off
(`Sink.validate_field_string_format` is False). That costs ~90 µs a record. This validator compiles
the stream schema with `fastjsonschema` (formats off, defaults not inserted) and keeps the SDK's
verdict exact by two rules:

- A record the compiled validator rejects, or on which it fails, is judged again by the SDK's own
  jsonschema validator, whose verdict stands (rejects are rare, so this costs nothing in practice).
- Schemas where fastjsonschema (drafts 4 to 7) could *accept* what Draft 2020-12 rejects are not
  compiled at all: keywords whose meaning differs between the drafts, `$ref` beside other keywords,
  `enum`/`const` holding objects or arrays, `not`/`oneOf`/`if` (which turn a wrong reject inside
  them into a wrong accept), and format checking when it is switched on. Those
  streams use jsonschema alone.

The golden test (tests/test_validation.py) checks the rejected set against jsonschema's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import fastjsonschema
import jsonschema
from singer_sdk.exceptions import InvalidJSONSchema, InvalidRecord
from singer_sdk.sinks.core import BaseJSONSchemaValidator
from singer_sdk.typing import DEFAULT_JSONSCHEMA_VALIDATOR

LOGGER = logging.getLogger(__name__)

# Keywords fastjsonschema (draft 7) reads differently from Draft 2020-12, or does not know.
_UNSAFE_KEYWORDS = frozenset(
    {
        "additionalItems",
        "dependencies",
        "prefixItems",
        "unevaluatedItems",
        "unevaluatedProperties",
        "dependentRequired",
        "dependentSchemas",
        "minContains",
        "maxContains",
        "$dynamicRef",
        "$dynamicAnchor",
        "$recursiveRef",
        "$recursiveAnchor",
        "$anchor",
        "$id",
        "id",
        # Non-monotone: where fastjsonschema wrongly rejects inside them (e.g. a Decimal against a
        # numeric enum), the whole schema would wrongly accept, and no re-check would catch it.
        "not",
        "oneOf",
        "if",
    }
)
# Keywords that may sit beside `$ref` without changing validation (draft 7 ignores siblings).
_ANNOTATIONS = frozenset(
    {
        "$ref",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "$defs",
        "definitions",
    }
)
# Keywords whose value is a schema, a list of schemas, or a map of name → schema.
_SCHEMA_KEYWORDS = frozenset(
    {"items", "additionalProperties", "propertyNames", "contains", "not", "if", "then", "else"}
)
_SCHEMA_LIST_KEYWORDS = frozenset({"allOf", "anyOf", "oneOf"})
_SCHEMA_MAP_KEYWORDS = frozenset({"properties", "patternProperties", "$defs", "definitions"})


def _subschemas(schema: dict[str, Any]) -> Iterator[Any]:
    for keyword, value in schema.items():
        if keyword in _SCHEMA_KEYWORDS:
            yield value
        elif keyword in _SCHEMA_LIST_KEYWORDS and isinstance(value, list):
            yield from value
        elif keyword in _SCHEMA_MAP_KEYWORDS and isinstance(value, dict):
            yield from value.values()


def unsafe_for_compilation(schema: Any) -> str | None:
    """Why fastjsonschema could disagree with Draft 2020-12 on this schema; None if it cannot."""
    if not isinstance(schema, dict):
        return None
    for keyword in _UNSAFE_KEYWORDS.intersection(schema):
        return f"keyword {keyword!r}"
    if "items" in schema and isinstance(schema["items"], list):
        return "'items' given as a list"
    if "$ref" in schema:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            return "a non-local '$ref'"
        if not _ANNOTATIONS.issuperset(schema):
            return "'$ref' beside other keywords"
    enum = schema.get("enum")
    if isinstance(enum, list) and any(isinstance(value, (dict, list)) for value in enum):
        return "'enum' holding objects or arrays"
    if isinstance(schema.get("const"), (dict, list)):
        return "'const' holding an object or array"
    for subschema in _subschemas(schema):
        reason = unsafe_for_compilation(subschema)
        if reason is not None:
            return reason
    return None


class _Unsafe(Exception):  # a reason to use jsonschema alone
    pass


# Bounds that a stricter float may replace: round towards the inside of the allowed range, so the
# compiled validator never accepts what the exact Decimal bound rejects (rejects are re-checked).
_ROUND_DOWN = frozenset({"maximum", "exclusiveMaximum"})
_ROUND_UP = frozenset({"minimum", "exclusiveMinimum"})


def _without_decimals(value: Any, keyword: str | None = None) -> Any:
    """A copy of the schema where Decimal constants (singer-sdk parses floats as Decimal) are
    floats fastjsonschema can compile, or raise `_Unsafe` where a float would change the verdict.
    """
    if isinstance(value, dict):
        return {key: _without_decimals(item, key) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_decimals(item, keyword) for item in value]
    if not isinstance(value, Decimal):
        return value
    if keyword in ("default", "examples", "title", "description"):
        return float(value)
    if not value.is_finite():
        raise _Unsafe(f"a non-finite Decimal in {keyword!r}")
    if keyword == "multipleOf":
        if value == value.to_integral():
            return int(value)
        raise _Unsafe(f"the decimal {value} in 'multipleOf'")
    as_float = float(value)
    if Decimal(as_float) == value:
        return as_float
    if keyword in _ROUND_DOWN:
        return as_float if Decimal(as_float) < value else math.nextafter(as_float, -math.inf)
    if keyword in _ROUND_UP:
        return as_float if Decimal(as_float) > value else math.nextafter(as_float, math.inf)
    raise _Unsafe(f"the decimal {value} in {keyword!r} has no exact float")


class FastJSONSchemaValidator(BaseJSONSchemaValidator):
    """singer-sdk record validator: fastjsonschema for speed, jsonschema's verdict on rejects."""

    def __init__(
        self,
        schema: dict[str, Any],
        *,
        validate_formats: bool = False,
        format_checker: jsonschema.FormatChecker | None = None,
    ) -> None:
        """Compile `schema`, or fall back to jsonschema where compilation could disagree.

        Args:
            schema: The stream's JSON schema.
            validate_formats: Check string formats as the SDK does when this is on.
            format_checker: A user-defined format checker, used when `validate_formats` is on.

        Raises:
            InvalidJSONSchema: The schema is not a valid Draft 2020-12 schema.
        """
        super().__init__(schema)
        if not validate_formats:
            format_checker = jsonschema.FormatChecker(formats=())
        elif format_checker is None:
            format_checker = DEFAULT_JSONSCHEMA_VALIDATOR.FORMAT_CHECKER
        try:
            DEFAULT_JSONSCHEMA_VALIDATOR.check_schema(schema)
        except jsonschema.SchemaError as error:
            raise InvalidJSONSchema(f"Schema Validation Error: {error}") from error
        self._reference = DEFAULT_JSONSCHEMA_VALIDATOR(schema, format_checker=format_checker)
        self.fallback_reason: str | None = (
            "format checking is on" if validate_formats else unsafe_for_compilation(schema)
        )
        self._compiled = None
        if self.fallback_reason is None:
            self._compiled = self._compile(schema)
        if self._compiled is None:
            LOGGER.debug("Validating with jsonschema: %s", self.fallback_reason)

    @property
    def compiled(self) -> bool:
        """True when records are checked by the compiled validator first."""
        return self._compiled is not None

    def _compile(self, schema: dict[str, Any]) -> Any:
        try:
            definition = _without_decimals(schema)
        except _Unsafe as unsafe:
            self.fallback_reason = str(unsafe)
            return None
        definition.pop("$schema", None)
        definition["$schema"] = "http://json-schema.org/draft-07/schema#"
        try:
            return fastjsonschema.compile(definition, use_default=False, use_formats=False)
        except Exception as error:  # any compile failure means: use jsonschema
            self.fallback_reason = f"fastjsonschema cannot compile it ({type(error).__name__})"
            return None

    def validate(self, record: dict[str, Any]) -> None:
        """Raise `InvalidRecord` if the record does not match the schema.

        Raises:
            InvalidRecord: The record is invalid (jsonschema's verdict and message).
        """
        compiled = self._compiled
        if compiled is not None:
            try:
                compiled(record)
            except Exception:  # noqa: S110 - the reference validator decides below
                pass
            else:
                return
        self._validate_with_reference(record)

    def _validate_with_reference(self, record: dict[str, Any]) -> None:
        try:
            error = next(self._reference.iter_errors(record), None)
        except (TypeError, ArithmeticError) as failure:
            # jsonschema itself cannot judge it (e.g. a Decimal against a float multipleOf);
            # the SDK would crash, we reject the record instead.
            message = f"value cannot be validated: {type(failure).__name__}"
            raise InvalidRecord(message, record) from failure
        if error is not None:
            raise InvalidRecord(error.message, record) from error

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

Schemas made only of types (`type`, `properties`, `items`, `anyOf`, `required`, annotations
and formats), as most taps write them, skip fastjsonschema too: `compile_type_checks` turns them
into one generated expression, twice as fast, that is strict where JSON Schema is lenient (an
integer written `5.0`), so its "no" also goes to jsonschema.

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


# Type-only schemas (most Singer taps' schemas): checked by a generated expression instead.
_TYPE_CHECKS = {
    "string": "type({v}) is str",
    "null": "{v} is None",
    "boolean": "type({v}) is bool",
    "integer": "type({v}) is int",
    "number": "(type({v}) is int or type({v}) is float or type({v}) is Decimal)",
    "object": "type({v}) is dict",
    "array": "type({v}) is list",
}
_TYPE_ONLY_KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "items",
        "anyOf",
        "required",
        "additionalProperties",
        "format",
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)


class _NotTypeOnly(Exception):
    """The schema uses a keyword the type-only checker does not handle."""


class _TypeCheckSource:
    """Builds one boolean expression that is True only for values the schema accepts."""

    def __init__(self) -> None:
        self.names = 0

    def fresh(self) -> str:
        self.names += 1
        return f"_v{self.names}"

    def expression(self, schema: Any, v: str) -> str:
        if schema is True:
            return "True"
        if not isinstance(schema, dict) or not set(schema) <= _TYPE_ONLY_KEYWORDS:
            raise _NotTypeOnly
        if schema.get("additionalProperties", True) is not True:
            raise _NotTypeOnly
        parts = []
        if "type" in schema:
            parts.append(self._types(schema, v))
        elif "properties" in schema or "items" in schema or "required" in schema:
            raise _NotTypeOnly  # constraints on values of any type: left to fastjsonschema
        if "anyOf" in schema:
            branches = schema["anyOf"]
            if not isinstance(branches, list) or not branches:
                raise _NotTypeOnly
            parts.append("(" + " or ".join(self.expression(b, v) for b in branches) + ")")
        return "(" + " and ".join(parts) + ")" if parts else "True"

    def _types(self, schema: dict[str, Any], v: str) -> str:
        types = schema["type"]
        types = [types] if isinstance(types, str) else types
        if not isinstance(types, list) or not types or not set(types) <= set(_TYPE_CHECKS):
            raise _NotTypeOnly
        alternatives = []
        for name in types:
            check = _TYPE_CHECKS[name].format(v=v)
            if name == "object":
                check = self._object(schema, v, check)
            elif name == "array" and "items" in schema:
                item = self.fresh()
                check = (
                    f"({check} and all({self.expression(schema['items'], item)} for {item} in {v}))"
                )
            alternatives.append(check)
        if ("properties" in schema or "required" in schema) and "object" not in types:
            raise _NotTypeOnly
        if "items" in schema and "array" not in types:
            raise _NotTypeOnly
        return "(" + " or ".join(alternatives) + ")"

    def _object(self, schema: dict[str, Any], v: str, check: str) -> str:
        parts = [check]
        required = schema.get("required", [])
        if not isinstance(required, list) or not all(isinstance(k, str) for k in required):
            raise _NotTypeOnly
        parts.extend(f"{key!r} in {v}" for key in required)
        properties = schema.get("properties", {})
        if not isinstance(properties, dict):
            raise _NotTypeOnly
        for key, subschema in properties.items():
            if subschema is True:
                continue
            value = self.fresh()
            parts.append(
                f"(({value} := {v}.get({key!r}, _ABSENT)) is _ABSENT "
                f"or {self.expression(subschema, value)})"
            )
        return "(" + " and ".join(parts) + ")"


def compile_type_checks(schema: Any) -> Any:
    """A function record → bool for a schema made only of types, properties, items, anyOf and
    required (annotations and formats aside), or None for any other schema.

    It is strict, never lenient: True means the schema accepts the record; False means "ask
    the exact validators" (an integer written 5.0, a str subclass, or a truly invalid record).
    """
    try:
        expression = _TypeCheckSource().expression(schema, "record")
    except (_NotTypeOnly, TypeError):
        return None
    namespace: dict[str, Any] = {"Decimal": Decimal, "_ABSENT": object()}
    source = f"def check(record):\n    return {expression}\n"
    try:
        exec(compile(source, "<type checks>", "exec"), namespace)  # noqa: S102
    except (SyntaxError, RecursionError, MemoryError):  # absurdly deep schemas
        return None
    return namespace["check"]


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
        self._type_checks = None
        if self.fallback_reason is None:
            self._type_checks = compile_type_checks(schema)
            if self._type_checks is None:
                self._compiled = self._compile(schema)
        if not self.compiled:
            LOGGER.debug("Validating with jsonschema: %s", self.fallback_reason)

    @property
    def compiled(self) -> bool:
        """True when records are checked by a compiled validator first."""
        return self._compiled is not None or self._type_checks is not None

    @property
    def checks_types_only(self) -> bool:
        """True when the schema is checked by the generated type checks (no fastjsonschema)."""
        return self._type_checks is not None

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
        type_checks = self._type_checks
        if type_checks is not None:
            if type_checks(record):
                return
            self._validate_with_reference(record)
            return
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

"""Golden test: FastJSONSchemaValidator rejects exactly what singer-sdk's validator rejects."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from singer_sdk.exceptions import InvalidJSONSchema, InvalidRecord
from singer_sdk.sinks.core import JSONSchemaValidator

from target_omnisend.validation import (
    FastJSONSchemaValidator,
    compile_type_checks,
    unsafe_for_compilation,
)

NULLABLE_STRING = {"type": ["string", "null"]}

CUSTOMERS = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": "string", "maxLength": 254},
        "first_name": NULLABLE_STRING,
        "last_name": NULLABLE_STRING,
        "created_at": {"type": ["string", "null"], "format": "date-time"},
        "birthday": {"type": ["string", "null"], "format": "date"},
        "total_spent": {"type": ["number", "null"], "minimum": 0},
        "orders_count": {"type": ["integer", "null"], "minimum": 0, "maximum": 100000},
        "accepts_marketing": {"type": ["boolean", "null"]},
        "state": {"enum": ["enabled", "disabled", "invited", None]},
        "tags": {"type": ["array", "null"], "items": {"type": "string", "minLength": 1}},
        "address": {
            "type": ["object", "null"],
            "properties": {
                "line1": NULLABLE_STRING,
                "city": NULLABLE_STRING,
                "zip": {"type": ["string", "null"], "pattern": "^[A-Z0-9 -]{3,10}$"},
                "country_code": {"type": ["string", "null"], "minLength": 2, "maxLength": 2},
            },
            "additionalProperties": False,
        },
    },
    "required": ["id", "email"],
}

ORDERS = {  # singer-sdk typing style: anyOf unions, nested arrays of objects
    "type": "object",
    "properties": {
        "order_id": {"type": "string", "minLength": 1},
        "customer_email": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "placed_at": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
        "amount": {"type": "number", "exclusiveMinimum": 0},
        "discount_percent": {"type": ["integer", "null"], "multipleOf": 5, "maximum": 100},
        "line_items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "price": {"type": "number"},
                },
                "required": ["sku", "quantity"],
            },
        },
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    },
    "required": ["order_id", "line_items"],
    "additionalProperties": False,
}

EVENTS = {
    "type": "object",
    "properties": {
        "kind": {"const": "page_view"},
        "path": {"type": "string", "pattern": "^/"},
        "labels": {
            "type": "array",
            "items": {"type": "string"},
            "uniqueItems": True,
            "maxItems": 3,
        },
        "score": {"type": "number", "minimum": Decimal("0.5"), "maximum": 10},
        "flags": {"type": "object", "minProperties": 1, "maxProperties": 2},
    },
    "patternProperties": {"^x_": {"type": ["string", "integer"]}},
    "additionalProperties": {"type": "boolean"},
    "required": ["kind"],
}

PROFILES = {  # not, oneOf, if/then and $ref: jsonschema alone
    "type": "object",
    "$defs": {"name": {"type": "string", "minLength": 1, "maxLength": 40}},
    "properties": {
        "name": {"$ref": "#/$defs/name"},
        "nickname": {"$ref": "#/$defs/name"},
        "contact": {
            "oneOf": [
                {"type": "string", "pattern": "@"},
                {"type": "integer"},
            ]
        },
        "level": {"not": {"enum": [0]}},
        "plan": {"type": "string"},
        "seats": {"type": "integer"},
    },
    "if": {"properties": {"plan": {"const": "team"}}, "required": ["plan"]},
    "then": {"required": ["seats"]},
}

PRICES = {  # as singer-sdk parses a SCHEMA message: JSON floats become Decimal
    "type": "object",
    "properties": {
        "rate": {"type": "number", "minimum": Decimal("0.1"), "maximum": Decimal("2.2")},
        "step": {"type": ["number", "null"], "exclusiveMaximum": Decimal("0.5")},
        "tier": {"enum": [Decimal("1.5"), Decimal("1"), "free"]},
        "units": {"type": "integer", "multipleOf": Decimal("10")},
    },
}

CONTACTS = {  # types only, as most taps write them: checked by the generated type checks
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "integer"},
        "email": {"type": ["string", "null"], "format": "email", "description": "annotation"},
        "score": {"type": ["number", "null"]},
        "active": {"type": "boolean"},
        "updated_at": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
        "labels": {"type": ["array", "null"], "items": {"type": "string"}},
        "address": {
            "type": ["object", "null"],
            "required": ["line1"],
            "properties": {"line1": {"type": "string"}, "zip": {"type": ["string", "integer"]}},
            "additionalProperties": True,
        },
        "anything": {},
        "free": True,
    },
}

SCHEMAS = {
    "contacts": CONTACTS,
    "customers": CUSTOMERS,
    "orders": ORDERS,
    "events": EVENTS,
    "profiles": PROFILES,
    "prices": PRICES,
}

GOOD_RECORDS: dict[str, dict[str, Any]] = {
    "contacts": {
        "id": 7,
        "email": "jane@example.com",
        "score": Decimal("1.5"),
        "active": True,
        "updated_at": "2024-05-01T10:00:00Z",
        "labels": ["vip"],
        "address": {"line1": "1 High St", "zip": 12345},
        "anything": {"nested": [1]},
        "free": [None],
    },
    "customers": {
        "id": 1,
        "email": "jane@example.com",
        "first_name": "Jane",
        "last_name": None,
        "created_at": "2024-05-01T10:00:00Z",
        "birthday": "1990-02-03",
        "total_spent": Decimal("123.45"),
        "orders_count": 3,
        "accepts_marketing": True,
        "state": "enabled",
        "tags": ["vip", "newsletter"],
        "address": {
            "line1": "1 High St",
            "city": "London",
            "zip": "SW1A 1AA",
            "country_code": "GB",
        },
    },
    "orders": {
        "order_id": "A-1",
        "customer_email": "jane@example.com",
        "placed_at": "2024-05-01T10:00:00+02:00",
        "amount": Decimal("19.99"),
        "discount_percent": 10,
        "line_items": [{"sku": "X1", "quantity": 2, "price": Decimal("9.99")}],
        "metadata": {"channel": "web"},
    },
    "events": {
        "kind": "page_view",
        "path": "/home",
        "labels": ["a", "b"],
        "score": 5,
        "flags": {"new": True},
        "x_campaign": "spring",
        "is_bot": False,
    },
    "profiles": {"name": "Jane", "nickname": "J", "contact": "jane@x.com", "level": 2},
    "prices": {"rate": Decimal("0.1"), "step": Decimal("0.25"), "tier": "free", "units": 20},
}

# Values put in place of each property to make (mostly) bad records.
REPLACEMENTS: tuple[Any, ...] = (
    None,
    0,
    -1,
    1,
    1.0,
    2.5,
    Decimal("0"),
    Decimal("0.25"),
    Decimal("7"),
    Decimal("0.10000000000000000001"),
    Decimal("0.09999999999999999999"),
    Decimal("2.2"),
    0.1,
    Decimal("1.5"),
    Decimal("1"),
    "free",
    10**7,
    True,
    False,
    "",
    "x",
    "not a date",
    "2024-13-45T99:99:99Z",
    "a" * 300,
    "/path",
    "page_view",
    "team",
    [],
    ["a"],
    ["a", "a"],
    [1, 2],
    [{"sku": "S"}],
    {},
    {"a": "b"},
    {"line1": "x", "extra": 1},
    {"line1": 5},
    {"zip": "A1"},
    ["a", 1],
)


def _variants(good: dict[str, Any]) -> list[dict[str, Any]]:
    records = [copy.deepcopy(good)]
    for name in good:
        without = copy.deepcopy(good)
        del without[name]
        records.append(without)
        for value in REPLACEMENTS:
            changed = copy.deepcopy(good)
            changed[name] = copy.deepcopy(value)
            records.append(changed)
    for extra in ({"unknown": 1}, {"x_id": 5}, {"x_id": 1.5}, {"is_new": "yes"}):
        records.append({**copy.deepcopy(good), **extra})
    records.append({})
    return records


def _rejected(validator: Any, records: list[dict[str, Any]]) -> set[int]:
    rejected = set()
    for index, record in enumerate(records):
        try:
            validator.validate(record)
        except InvalidRecord:
            rejected.add(index)
    return rejected


def _sdk_verdicts(
    schema: dict[str, Any], records: list[dict[str, Any]]
) -> tuple[set[int], set[int]]:
    """(rejected, crashed): the SDK's validator raises TypeError on a float against a Decimal
    multipleOf (floats never come from its reader, which parses them as Decimal)."""
    validator = JSONSchemaValidator(schema)
    rejected, crashed = set(), set()
    for index, record in enumerate(records):
        try:
            validator.validate(record)
        except InvalidRecord:
            rejected.add(index)
        except TypeError:
            crashed.add(index)
    return rejected, crashed


@pytest.mark.parametrize("stream", sorted(SCHEMAS))
def test_rejects_exactly_what_the_sdk_validator_rejects(stream: str) -> None:
    schema = SCHEMAS[stream]
    records = _variants(GOOD_RECORDS[stream])
    expected, crashed = _sdk_verdicts(schema, records)
    actual = _rejected(FastJSONSchemaValidator(schema), records)
    assert actual - crashed == expected
    assert crashed <= actual, "where the SDK's validator crashes, ours rejects"
    assert 0 not in expected, "the good record must pass"
    assert len(expected) >= 20, "the corpus must hold bad records"
    assert len(records) - len(expected) >= 10, "the corpus must hold good records"


def test_corpus_size() -> None:
    total = sum(len(_variants(GOOD_RECORDS[stream])) for stream in SCHEMAS)
    assert total >= 200


@pytest.mark.parametrize(
    ("stream", "compiled"),
    [
        ("contacts", True),
        ("customers", True),
        ("orders", True),
        ("events", True),
        ("profiles", False),
        ("prices", True),
    ],
)
def test_compiles_where_it_is_safe(stream: str, compiled: bool) -> None:
    assert FastJSONSchemaValidator(SCHEMAS[stream]).compiled is compiled


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"not": {"enum": [1]}}, "keyword 'not'"),
        ({"properties": {"a": {"oneOf": [{}, {}]}}}, "keyword 'oneOf'"),
        ({"items": [{"type": "string"}]}, "'items' given as a list"),
        ({"prefixItems": [{"type": "string"}]}, "keyword 'prefixItems'"),
        ({"dependentRequired": {"a": ["b"]}}, "keyword 'dependentRequired'"),
        ({"$ref": "#/$defs/a", "maxLength": 2, "$defs": {"a": {}}}, "'$ref' beside other keywords"),
        ({"$ref": "https://example.com/schema.json"}, "a non-local '$ref'"),
        ({"enum": [{"a": 1}]}, "'enum' holding objects or arrays"),
        ({"const": [1]}, "'const' holding an object or array"),
    ],
)
def test_unsafe_schemas_fall_back(schema: dict[str, Any], reason: str) -> None:
    assert unsafe_for_compilation(schema) == reason


def test_inexact_decimal_multiple_of_falls_back() -> None:
    validator = FastJSONSchemaValidator({"properties": {"p": {"multipleOf": Decimal("0.01")}}})
    assert not validator.compiled
    assert validator.fallback_reason == "the decimal 0.01 in 'multipleOf'"


def test_decimal_against_numeric_enum_under_not_matches_jsonschema() -> None:
    schema = {"type": "object", "properties": {"n": {"not": {"enum": [1]}}}}
    record = {"n": Decimal("1")}
    with pytest.raises(InvalidRecord):
        JSONSchemaValidator(schema).validate(record)
    with pytest.raises(InvalidRecord):
        FastJSONSchemaValidator(schema).validate(record)


def test_decimal_against_numeric_enum_is_rechecked_and_accepted() -> None:
    schema = {"type": "object", "properties": {"n": {"enum": [1.5, 2]}}}
    validator = FastJSONSchemaValidator(schema)
    assert validator.compiled
    validator.validate({"n": Decimal("1.5")})  # fastjsonschema alone would reject it


def test_raises_the_sdk_exception_with_jsonschema_message() -> None:
    validator = FastJSONSchemaValidator(CUSTOMERS)
    with pytest.raises(InvalidRecord) as caught:
        validator.validate({"id": "one", "email": "a@b.co"})
    assert caught.value.error_message == "'one' is not of type 'integer'"
    assert caught.value.record == {"id": "one", "email": "a@b.co"}


def test_does_not_insert_defaults_into_records() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string", "default": "x"}}}
    record: dict[str, Any] = {}
    FastJSONSchemaValidator(schema).validate(record)
    assert record == {}


def test_formats_are_not_checked_by_default_like_the_sdk() -> None:
    validator = FastJSONSchemaValidator(CUSTOMERS)
    validator.validate({"id": 1, "email": "x", "created_at": "yesterday", "birthday": "soon"})


def test_format_checking_when_asked_matches_the_sdk() -> None:
    records = [
        {"id": 1, "email": "x", "created_at": "2024-01-01T00:00:00Z", "birthday": "1990-01-01"},
        {"id": 1, "email": "x", "created_at": "yesterday"},
        {"id": 1, "email": "x", "birthday": "1990-02-30"},
    ]
    sdk = JSONSchemaValidator(CUSTOMERS, validate_formats=True)
    ours = FastJSONSchemaValidator(CUSTOMERS, validate_formats=True)
    assert not ours.compiled
    assert _rejected(ours, records) == _rejected(sdk, records)


def test_invalid_schema_raises_the_sdk_exception() -> None:
    with pytest.raises(InvalidJSONSchema):
        FastJSONSchemaValidator({"type": "no-such-type"})


def test_value_jsonschema_cannot_judge_is_rejected_not_crashed() -> None:
    schema = {"type": "object", "properties": {"price": {"type": "number", "multipleOf": 0.01}}}
    with pytest.raises(InvalidRecord, match="cannot be validated"):
        FastJSONSchemaValidator(schema).validate({"price": Decimal("1.001")})


@pytest.mark.parametrize(
    ("stream", "types_only"),
    [("contacts", True), ("customers", False), ("orders", False), ("profiles", False)],
)
def test_type_only_schemas_are_checked_without_fastjsonschema(
    stream: str, types_only: bool
) -> None:
    assert FastJSONSchemaValidator(SCHEMAS[stream]).checks_types_only is types_only


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}},
        {"type": "object", "additionalProperties": False},
        {"type": "object", "properties": {"a": {"type": "date"}}},
        {"properties": {"a": {"type": "string"}}},  # properties without a type
        {"type": "object", "properties": {"a": False}},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {}}},
        {"type": "object", "properties": {"a": {"anyOf": []}}},
    ],
)
def test_other_keywords_are_left_to_the_exact_validators(schema: dict[str, Any]) -> None:
    assert compile_type_checks(schema) is None


def test_type_checks_are_strict_where_json_schema_is_lenient() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    check = compile_type_checks(schema)
    assert check({"n": 5})
    assert check({})
    assert not check({"n": 5.0})  # an integer for JSON Schema: the exact validator says so
    assert not check({"n": True})
    validator = FastJSONSchemaValidator(schema)
    validator.validate({"n": 5.0})  # accepted, by jsonschema's verdict
    with pytest.raises(InvalidRecord):
        validator.validate({"n": "5"})

"""Unit tests for the record → Omnisend contact mapping."""

from __future__ import annotations

import copy
import json
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from target_omnisend.countries import calling_code, lookup_country
from target_omnisend.mapping import (
    ANCIENT_DATE,
    CONTACT_FIELDS,
    REJECT_CODES,
    MappedContact,
    MappingConfig,
    MappingConfigError,
    MappingPlan,
    Reject,
    compile_plan,
)

V2026 = "2026-03-15"
ALL_FIELDS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {},
    "additionalProperties": True,
}


def plan_for(
    mapping: dict[str, str] | None = None, schema: dict[str, Any] | None = None, **settings: Any
) -> MappingPlan:
    config = MappingConfig.from_target_config({"field_mapping": mapping, **settings})
    return compile_plan(schema if schema is not None else ALL_FIELDS_SCHEMA, config)


def mapped(plan: MappingPlan, record: dict[str, Any], **kwargs: Any) -> MappedContact:
    result = plan.map(record, **kwargs)
    assert isinstance(result, MappedContact), result
    return result


def rejected(plan: MappingPlan, record: dict[str, Any]) -> Reject:
    result = plan.map(record)
    assert isinstance(result, Reject), result
    assert result.code in REJECT_CODES
    return result


def one_field(field: str, value: Any, **settings: Any) -> MappedContact | Reject:
    plan = plan_for({"email": "email", field: "value"}, **settings)
    return plan.map({"email": "a@example.com", "value": value})


# --- configuration ------------------------------------------------------------------------


def test_from_target_config_defaults() -> None:
    config = MappingConfig.from_target_config({})
    assert config == MappingConfig(
        api_version=V2026,
        field_mapping=None,
        custom_properties={},
        static_tags=(),
        status_values={},
        default_phone_region=None,
        lowercase_emails=True,
        send_welcome_message=False,
    )


def test_from_target_config_reads_every_setting() -> None:
    config = MappingConfig.from_target_config(
        {
            "api_version": "v5",
            "field_mapping": {"email": "mail"},
            "custom_properties": {"loyalty": "points"},
            "tags": ["source: warehouse"],
            "status_values": {"Y": "subscribed"},
            "default_phone_region": "GB",
            "lowercase_emails": False,
            "send_welcome_message": True,
        }
    )
    assert config.api_version == "v5"
    assert config.field_mapping == {"email": "mail"}
    assert config.custom_properties == {"loyalty": "points"}
    assert config.static_tags == ("source: warehouse",)
    assert config.status_values == {"Y": "subscribed"}
    assert config.default_phone_region == "GB"
    assert config.lowercase_emails is False
    assert config.send_welcome_message is True


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"field_mapping": {"email": "e", "favouriteColour": "c"}}, "favouriteColour"),
        ({"field_mapping": {"firstName": "first"}}, "must map 'email' or 'phone'"),
        ({"field_mapping": {"email": "e"}, "api_version": "v3"}, "api_version 'v3'"),
        ({"field_mapping": {"email": "e"}, "status_values": {"Y": "yes"}}, "status_values['Y']"),
        ({"field_mapping": {"email": "e"}, "default_phone_region": "XX"}, "default_phone_region"),
        ({"field_mapping": {"email": "e"}, "custom_properties": {"bad name": "x"}}, "bad name"),
        ({"field_mapping": {"email": "e"}, "tags": [""]}, "tags must be non-empty"),
        ({"field_mapping": {"email": "e"}, "tags": [f"t{i}" for i in range(101)]}, "101 static"),
        ({"field_mapping": {"email": "e"}, "lowercase_emails": "maybe"}, "lowercase_emails"),
        ({"field_mapping": {"email": ""}}, "must map 'email' or 'phone'"),
        ({"field_mapping": ["email"]}, "'field_mapping' must be an object"),
        ({"field_mapping": {"email": 5}}, "record path 5 must be text"),
        ({"field_mapping": {"email": "e"}, "status_values": "Y"}, "'status_values' must be"),
        ({"field_mapping": {"email": "e"}, "tags": {"a": 1}}, "'tags' must be a list"),
    ],
)
def test_config_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        compile_plan(ALL_FIELDS_SCHEMA, MappingConfig.from_target_config(settings))


def test_config_error_is_a_value_error() -> None:
    assert issubclass(MappingConfigError, ValueError)


def test_identifier_path_missing_from_a_closed_schema_is_a_config_error() -> None:
    schema = {"type": "object", "properties": {"id": {}, "name": {}}}
    with pytest.raises(MappingConfigError, match="email → 'mail'"):
        plan_for({"email": "mail", "firstName": "name"}, schema=schema)


def test_other_missing_paths_only_warn() -> None:
    schema = {"type": "object", "properties": {"mail": {}}}
    plan = plan_for({"email": "mail", "firstName": "given"}, schema=schema)
    assert plan.warnings == [
        "field_mapping.firstName → 'given': the stream schema has no such property"
    ]


def test_every_contact_field_can_be_mapped() -> None:
    plan = plan_for({name: name for name in CONTACT_FIELDS})
    assert set(plan.matched) == set(CONTACT_FIELDS)


# --- conventional column names ----------------------------------------------------------------


def test_conventional_names_are_matched_case_insensitively() -> None:
    schema = {
        "properties": {
            name: {}
            for name in (
                "Email_Address",
                "FirstName",
                "last_name",
                "Phone_Number",
                "address1",
                "City",
                "province",
                "ZIP",
                "country",
                "country_code",
                "Sex",
                "DOB",
                "created_at",
                "email_status",
                "sms_status",
                "tags",
                "unrelated",
            )
        }
    }
    plan = plan_for(None, schema=schema)
    assert plan.matched == {
        "email": "Email_Address",
        "phone": "Phone_Number",
        "firstName": "FirstName",
        "lastName": "last_name",
        "address": "address1",
        "city": "City",
        "state": "province",
        "postalCode": "ZIP",
        "country": "country",
        "countryCode": "country_code",
        "gender": "Sex",
        "birthdate": "DOB",
        "createdAt": "created_at",
        "emailStatus": "email_status",
        "smsStatus": "sms_status",
        "tags": "tags",
    }


@pytest.mark.parametrize(
    ("column", "field"),
    [
        ("email", "email"),
        ("e_mail", "email"),
        ("given_name", "firstName"),
        ("surname", "lastName"),
        ("family_name", "lastName"),
        ("mobile", "phone"),
        ("street", "address"),
        ("region", "state"),
        ("postal_code", "postalCode"),
        ("zip_code", "postalCode"),
        ("postcode", "postalCode"),
        ("gender", "gender"),
        ("birthday", "birthdate"),
        ("date_of_birth", "birthdate"),
    ],
)
def test_conventional_aliases(column: str, field: str) -> None:
    assert plan_for(None, schema={"properties": {column: {}}}).matched == {field: column}


def test_schema_without_identifier_columns_rejects_records_instead_of_failing() -> None:
    plan = plan_for(None, schema={"properties": {"id": {}, "name": {}}})
    assert plan.matched == {}
    assert rejected(plan, {"id": 1, "name": "x"}).code == "missing_identifier"


# --- paths ------------------------------------------------------------------------------------


def test_nested_paths_and_list_indexes() -> None:
    plan = plan_for(
        {"email": "contact.emails.0", "city": "contact.address.city", "firstName": "names.1"}
    )
    contact = mapped(
        plan,
        {
            "contact": {"emails": ["a@example.com", "b@example.com"], "address": {"city": "Oslo"}},
            "names": ["x", "Ann"],
        },
    )
    assert contact.email == "a@example.com"
    assert contact.payload["city"] == "Oslo"
    assert contact.payload["firstName"] == "Ann"


@pytest.mark.parametrize(
    "record",
    [
        {"email": "a@example.com"},
        {"email": "a@example.com", "contact": None},
        {"email": "a@example.com", "contact": "text"},
        {"email": "a@example.com", "contact": {"address": []}},
        {"email": "a@example.com", "contact": {"address": {}}},
    ],
)
def test_missing_nested_values_are_omitted(record: dict[str, Any]) -> None:
    plan = plan_for({"email": "email", "city": "contact.address.city"})
    assert "city" not in mapped(plan, record).payload


def test_index_out_of_range_is_omitted() -> None:
    plan = plan_for({"email": "emails.3"})
    assert rejected(plan, {"emails": ["a@example.com"]}).code == "missing_identifier"


@pytest.mark.parametrize("schema", [ALL_FIELDS_SCHEMA, {"properties": {"contact.email": {}}}])
def test_top_level_key_with_dots(schema: dict[str, Any]) -> None:
    plan = plan_for({"email": "contact.email"}, schema=schema)
    assert mapped(plan, {"contact.email": "a@example.com"}).email == "a@example.com"


# --- identifiers ----------------------------------------------------------------------------


def test_email_is_trimmed_and_lower_cased() -> None:
    contact = mapped(plan_for({"email": "e"}), {"e": "  Jane.Doe@Example.COM "})
    assert contact.key == contact.email == "jane.doe@example.com"
    assert contact.payload["identifiers"][0]["id"] == "jane.doe@example.com"


def test_email_case_kept_when_lowercase_emails_is_off() -> None:
    contact = mapped(plan_for({"email": "e"}, lowercase_emails=False), {"e": " Jane@Example.com"})
    assert contact.email == "Jane@Example.com"


@pytest.mark.parametrize(
    "email",
    [
        "plain",
        "a@b",
        "a b@example.com",
        "a@exa mple.com",
        "@example.com",
        "a@@example.com",
        "a@.example.com",
        "a..b@example.com",
        "a@example.c",
        "a@example.com.",
        "x" * 250 + "@example.com",
    ],
)
def test_invalid_email(email: str) -> None:
    reject = rejected(plan_for({"email": "e"}), {"e": email})
    assert reject == Reject("invalid_email", "email is not a valid email address.", "email")


@pytest.mark.parametrize(
    "email",
    ["a@example.com", "first.last+tag@sub.example.co.uk", "o'neil@example.ie", "x_y-z@ex-ample.io"],
)
def test_valid_email(email: str) -> None:
    assert mapped(plan_for({"email": "e"}), {"e": email}).email == email


@pytest.mark.parametrize("value", [{"address": "a@example.com"}, ["a@example.com"], 42, True])
def test_email_of_wrong_type(value: Any) -> None:
    assert rejected(plan_for({"email": "e"}), {"e": value}).code == "invalid_type"


@pytest.mark.parametrize("record", [{}, {"e": None, "p": None}, {"e": "", "p": "  "}, {"e": ""}])
def test_missing_identifier(record: dict[str, Any]) -> None:
    reject = rejected(plan_for({"email": "e", "phone": "p"}), record)
    assert reject.code == "missing_identifier"


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+44 7700 900123", None, "+447700900123"),
        ("0044 7700-900-123", None, "+447700900123"),
        ("(020) 7946.0958", "GB", "+442079460958"),
        ("07700 900123", "gb", "+447700900123"),
        ("1 (415) 555-0100", "US", "+14155550100"),
        ("415-555-0100", "US", "+14155550100"),
        ("06 1234 5678", "IT", "+390612345678"),
        ("030 123456", "DE", "+4930123456"),
        (4915123456789, None, None),
        ("+1 415 555 0100", "GB", "+14155550100"),
    ],
)
def test_phone_to_e164(raw: Any, region: str | None, expected: str | None) -> None:
    plan = plan_for({"phone": "p"}, default_phone_region=region)
    result = plan.map({"p": raw})
    if expected is None:
        assert isinstance(result, Reject)
        assert result.code == "phone_without_region"
    else:
        assert isinstance(result, MappedContact)
        assert result.key == result.phone == expected


@pytest.mark.parametrize(
    "raw", ["+44 77", "+0 123 456 789", "+44 7700 900123 ext 5", "+1234567890123456"]
)
def test_invalid_phone(raw: str) -> None:
    reject = rejected(plan_for({"phone": "p"}), {"p": raw})
    assert reject.code == "invalid_phone"
    assert raw not in reject.message


def test_national_phone_without_region() -> None:
    reject = rejected(plan_for({"phone": "p"}), {"p": "07700 900123"})
    assert reject.code == "phone_without_region"
    assert "default_phone_region" in reject.message


def test_phone_only_contact_uses_the_sms_channel_and_the_phone_key() -> None:
    plan = plan_for({"phone": "p", "smsStatus": "s"}, default_phone_region="GB")
    contact = mapped(plan, {"p": "07700900123", "s": "subscribed"})
    assert contact.key == "+447700900123"
    assert contact.email is None
    assert contact.payload["identifiers"] == [
        {
            "type": "phone",
            "id": "+447700900123",
            "channels": {"sms": {"status": "subscribed", "statusChangedAt": ANCIENT_DATE}},
            "sendWelcomeMessage": False,
        }
    ]


def test_email_and_phone_give_two_identifiers_keyed_by_email() -> None:
    plan = plan_for({"email": "e", "phone": "p"})
    contact = mapped(plan, {"e": "a@example.com", "p": "+4915123456789"})
    assert contact.key == "a@example.com"
    assert [identifier["type"] for identifier in contact.payload["identifiers"]] == [
        "email",
        "phone",
    ]


# --- text fields ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field", ["firstName", "lastName", "address", "city", "state", "postalCode"]
)
def test_text_fields_are_trimmed(field: str) -> None:
    result = one_field(field, "  Value  ")
    assert isinstance(result, MappedContact)
    assert result.payload[field] == "Value"


def test_numeric_postal_code_becomes_text() -> None:
    result = one_field("postalCode", 90210)
    assert isinstance(result, MappedContact)
    assert result.payload["postalCode"] == "90210"
    result = one_field("postalCode", Decimal("1234"))
    assert isinstance(result, MappedContact)
    assert result.payload["postalCode"] == "1234"


@pytest.mark.parametrize("value", [{"first": "Ann"}, ["Ann"], 1.5, True])
def test_text_field_of_wrong_type(value: Any) -> None:
    result = one_field("firstName", value)
    assert result == Reject("invalid_type", result.message, "firstName")  # type: ignore[union-attr]


def test_value_too_long() -> None:
    assert isinstance(one_field("city", "x" * 2048), MappedContact)
    result = one_field("city", "x" * 2049)
    assert isinstance(result, Reject)
    assert (result.code, result.field) == ("value_too_long", "city")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_empty_values_are_omitted(value: Any) -> None:
    result = one_field("lastName", value)
    assert isinstance(result, MappedContact)
    assert "lastName" not in result.payload


# --- country, gender, dates -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "name", "code"),
    [
        ("GB", "United Kingdom", "GB"),
        ("uk", "United Kingdom", "GB"),
        ("GBR", "United Kingdom", "GB"),
        ("United Kingdom of Great Britain and Northern Ireland", "United Kingdom", "GB"),
        ("USA", "United States", "US"),
        ("united states of america", "United States", "US"),
        ("Deutschland", "Germany", "DE"),
        (" germany ", "Germany", "DE"),
        ("Cote d'Ivoire", "Côte d'Ivoire", "CI"),
        ("The Netherlands", "Netherlands", "NL"),
    ],
)
def test_country(value: str, name: str, code: str) -> None:
    result = one_field("country", value)
    assert isinstance(result, MappedContact)
    assert (result.payload["country"], result.payload["countryCode"]) == (name, code)


@pytest.mark.parametrize("value", ["Atlantis", "XX", "ZZZ", "U"])
def test_invalid_country(value: str) -> None:
    result = one_field("country", value)
    assert isinstance(result, Reject)
    assert (result.code, result.field) == ("invalid_country", "country")


def test_country_code_must_be_alpha2() -> None:
    result = one_field("countryCode", "lt")
    assert isinstance(result, MappedContact)
    assert (result.payload["countryCode"], result.payload["country"]) == ("LT", "Lithuania")
    for bad in ("LTU", "Lithuania", "QQ"):
        reject = one_field("countryCode", bad)
        assert isinstance(reject, Reject)
        assert (reject.code, reject.field) == ("invalid_country", "countryCode")


def test_country_code_wins_over_country() -> None:
    plan = plan_for({"email": "e", "country": "c", "countryCode": "cc"})
    contact = mapped(plan, {"e": "a@example.com", "c": "France", "cc": "BE"})
    assert (contact.payload["country"], contact.payload["countryCode"]) == ("France", "BE")


def test_country_table() -> None:
    assert len({lookup_country(code) for code in ("US", "USA", "United States")}) == 1
    assert calling_code("gb") == 44
    assert calling_code("XX") is None


@pytest.mark.parametrize(
    ("value", "expected"), [("m", "m"), ("F", "f"), ("Male", "m"), (" FEMALE ", "f")]
)
def test_gender(value: str, expected: str) -> None:
    result = one_field("gender", value)
    assert isinstance(result, MappedContact)
    assert result.payload["gender"] == expected


def test_invalid_gender() -> None:
    result = one_field("gender", "other")
    assert isinstance(result, Reject)
    assert result.code == "invalid_gender"
    reject = one_field("gender", 1)
    assert isinstance(reject, Reject)
    assert reject.code == "invalid_type"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (date(1990, 2, 3), "1990-02-03"),
        (datetime(1990, 2, 3, 23, 0, tzinfo=timezone(timedelta(hours=-5))), "1990-02-03"),
        ("1990-02-03", "1990-02-03"),
        ("1990-02-03T00:00:00Z", "1990-02-03"),
        (" 2000-02-29 ", "2000-02-29"),
    ],
)
def test_birthdate(value: Any, expected: str) -> None:
    result = one_field("birthdate", value)
    assert isinstance(result, MappedContact)
    assert result.payload["birthdate"] == expected


@pytest.mark.parametrize(
    "value", ["1990-02-30", "03/02/1990", "yesterday", "1990-2-3", "2001-02-29"]
)
def test_invalid_birthdate(value: str) -> None:
    result = one_field("birthdate", value)
    assert isinstance(result, Reject)
    assert result.code == "invalid_birthdate"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2024, 5, 1, 12, 30, 15, tzinfo=timezone.utc), "2024-05-01T12:30:15Z"),
        (datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))), "2024-05-01T10:30:00Z"),
        (datetime(2024, 5, 1, 12, 30, 15, 999999), "2024-05-01T12:30:15Z"),
        (date(2024, 5, 1), "2024-05-01T00:00:00Z"),
        ("2024-05-01T12:30:15Z", "2024-05-01T12:30:15Z"),
        ("2024-05-01T12:30:15.123456789+02:00", "2024-05-01T10:30:15Z"),
        ("2024-05-01 12:30", "2024-05-01T12:30:00Z"),
        ("2024-05-01T00:30:00-0130", "2024-05-01T02:00:00Z"),
        ("2024-05-01", "2024-05-01T00:00:00Z"),
    ],
)
def test_created_at(value: Any, expected: str) -> None:
    result = one_field("createdAt", value)
    assert isinstance(result, MappedContact)
    assert result.payload["createdAt"] == expected


@pytest.mark.parametrize(
    "value",
    [
        "2024-13-01",
        "2024-05-01T25:00:00Z",
        "May 1st",
        "0000-01-01",
        "0001-01-01T00:00:00+01:00",
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_invalid_date(value: Any) -> None:
    result = one_field("createdAt", value)
    assert isinstance(result, Reject)
    assert (result.code, result.field) == ("invalid_date", "createdAt")


def test_date_of_wrong_type() -> None:
    result = one_field("createdAt", 1714560000)
    assert isinstance(result, Reject)
    assert result.code == "invalid_type"


# --- statuses and consent -------------------------------------------------------------------

STATUS_MAPPING = {
    "email": "e",
    "phone": "p",
    "emailStatus": "es",
    "emailStatusChangedAt": "ed",
    "smsStatus": "ss",
    "smsStatusChangedAt": "sd",
}


def channels(api_version: str, record: dict[str, Any]) -> list[Any]:
    plan = plan_for(STATUS_MAPPING, api_version=api_version)
    contact = mapped(plan, {"e": "a@example.com", "p": "+4915123456789", **record})
    return [identifier.get("channels") for identifier in contact.payload["identifiers"]]


def test_2026_without_status_omits_the_channel() -> None:
    assert channels(V2026, {}) == [None, None]
    assert channels(V2026, {"ed": "2024-01-01T00:00:00Z"}) == [None, None]


def test_v5_without_status_sends_non_subscribed_dated_long_ago() -> None:
    assert channels("v5", {}) == [
        {"email": {"status": "nonSubscribed", "statusDate": ANCIENT_DATE}},
        {"sms": {"status": "nonSubscribed", "statusDate": ANCIENT_DATE}},
    ]


@pytest.mark.parametrize(
    ("api_version", "date_key"), [(V2026, "statusChangedAt"), ("v5", "statusDate")]
)
def test_undated_status_is_dated_long_ago(api_version: str, date_key: str) -> None:
    assert channels(api_version, {"es": "unsubscribed", "ss": "subscribed"}) == [
        {"email": {"status": "unsubscribed", date_key: ANCIENT_DATE}},
        {"sms": {"status": "subscribed", date_key: ANCIENT_DATE}},
    ]


@pytest.mark.parametrize(
    ("api_version", "date_key"), [(V2026, "statusChangedAt"), ("v5", "statusDate")]
)
def test_dated_status(api_version: str, date_key: str) -> None:
    record = {
        "es": "subscribed",
        "ed": datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc),
        "ss": "NonSubscribed",
        "sd": "2024-03-02T10:00:00+01:00",
    }
    assert channels(api_version, record) == [
        {"email": {"status": "subscribed", date_key: "2024-03-01T09:00:00Z"}},
        {"sms": {"status": "nonSubscribed", date_key: "2024-03-02T09:00:00Z"}},
    ]


def test_status_values_translate_source_values() -> None:
    plan = plan_for(
        {"email": "e", "emailStatus": "s"},
        status_values={"Y": "subscribed", "opted_out": "unsubscribed", "true": "subscribed"},
    )
    for value, status in [
        ("y", "subscribed"),
        (" OPTED_OUT ", "unsubscribed"),
        (True, "subscribed"),
    ]:
        contact = mapped(plan, {"e": "a@example.com", "s": value})
        assert contact.payload["identifiers"][0]["channels"]["email"]["status"] == status


@pytest.mark.parametrize("value", ["yes", False, "N", 1])
def test_invalid_status(value: Any) -> None:
    plan = plan_for({"email": "e", "emailStatus": "s"}, status_values={"Y": "subscribed"})
    reject = rejected(plan, {"e": "a@example.com", "s": value})
    assert (reject.code, reject.field) == ("invalid_status", "emailStatus")


def test_status_of_wrong_type() -> None:
    plan = plan_for({"email": "e", "emailStatus": "s"})
    assert rejected(plan, {"e": "a@example.com", "s": {"v": 1}}).code == "invalid_type"


def test_invalid_status_date() -> None:
    plan = plan_for({"email": "e", "emailStatus": "s", "emailStatusChangedAt": "d"})
    reject = rejected(plan, {"e": "a@example.com", "s": "subscribed", "d": "soon"})
    assert (reject.code, reject.field) == ("invalid_date", "emailStatusChangedAt")


@pytest.mark.parametrize("welcome", [False, True])
@pytest.mark.parametrize("api_version", [V2026, "v5"])
def test_send_welcome_message_on_every_identifier(welcome: bool, api_version: str) -> None:
    plan = plan_for(
        {"email": "e", "phone": "p"}, send_welcome_message=welcome, api_version=api_version
    )
    contact = mapped(plan, {"e": "a@example.com", "p": "+4915123456789"})
    assert [i["sendWelcomeMessage"] for i in contact.payload["identifiers"]] == [welcome, welcome]


def test_consent_on_every_identifier() -> None:
    plan = plan_for(
        {
            "email": "e",
            "phone": "p",
            "consentSource": "src",
            "consentCreatedAt": "at",
            "consentIp": "ip",
            "consentUserAgent": "ua",
        }
    )
    record = {
        "e": "a@example.com",
        "p": "+4915123456789",
        "src": "checkout",
        "at": "2024-01-01T10:00:00+01:00",
        "ip": "192.0.2.1",
        "ua": "Mozilla/5.0",
    }
    consent = {
        "source": "checkout",
        "createdAt": "2024-01-01T09:00:00Z",
        "ip": "192.0.2.1",
        "userAgent": "Mozilla/5.0",
    }
    contact = mapped(plan, record)
    assert [i["consent"] for i in contact.payload["identifiers"]] == [consent, consent]


def test_no_consent_object_when_consent_values_are_empty() -> None:
    plan = plan_for({"email": "e", "consentSource": "src"})
    contact = mapped(plan, {"e": "a@example.com", "src": None})
    assert "consent" not in contact.payload["identifiers"][0]


# --- tags ------------------------------------------------------------------------------------


def test_tags_static_record_and_extra_in_order_without_duplicates() -> None:
    plan = plan_for({"email": "e", "tags": "t"}, tags=["warehouse", "vip"])
    contact = mapped(plan, {"e": "a@example.com", "t": ["vip", " new ", ""]}, extra_tags=["seg"])
    assert contact.tags == ("warehouse", "vip", "new", "seg")


def test_comma_separated_tags() -> None:
    plan = plan_for({"email": "e", "tags": "t"})
    assert mapped(plan, {"e": "a@example.com", "t": "a, b,,c"}).tags == ("a", "b", "c")


def test_tags_are_not_in_the_2026_payload_but_inline_on_v5() -> None:
    record = {"e": "a@example.com"}
    contact_2026 = mapped(plan_for({"email": "e"}, tags=["x"]), record)
    assert "tags" not in contact_2026.payload
    assert contact_2026.tags == ("x",)
    contact_v5 = mapped(plan_for({"email": "e"}, tags=["x"], api_version="v5"), record)
    assert contact_v5.payload["tags"] == ["x"]
    assert "tags" not in mapped(plan_for({"email": "e"}, api_version="v5"), record).payload


def test_too_many_tags() -> None:
    plan = plan_for({"email": "e", "tags": "t"}, tags=["s"])
    assert isinstance(
        plan.map({"e": "a@example.com", "t": [f"t{i}" for i in range(99)]}), MappedContact
    )
    reject = rejected(plan, {"e": "a@example.com", "t": [f"t{i}" for i in range(100)]})
    assert (reject.code, reject.field) == ("too_many_tags", "tags")


@pytest.mark.parametrize("value", [["a", 1], {"a": 1}, 5])
def test_tags_of_wrong_type(value: Any) -> None:
    plan = plan_for({"email": "e", "tags": "t"})
    assert rejected(plan, {"e": "a@example.com", "t": value}).code == "invalid_type"


# --- custom properties --------------------------------------------------------------------------


def custom(value: Any) -> MappedContact | Reject:
    plan = plan_for({"email": "e"}, custom_properties={"prop": "v"})
    return plan.map({"e": "a@example.com", "v": value})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("text", "text"),
        (7, 7),
        (2.5, 2.5),
        (Decimal("12"), 12),
        (Decimal("12.50"), 12.5),
        (True, True),
        (False, False),
        (["a", "b"], ["a", "b"]),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "2024-01-02T03:04:05Z"),
        (date(2024, 1, 2), "2024-01-02"),
    ],
)
def test_custom_property_values(value: Any, expected: Any) -> None:
    result = custom(value)
    assert isinstance(result, MappedContact)
    assert result.payload["customProperties"] == {"prop": expected}
    assert type(result.payload["customProperties"]["prop"]) is type(expected)


@pytest.mark.parametrize(
    "value",
    [
        {"nested": 1},
        [1, 2],
        [["a"]],
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),
        object(),
    ],
)
def test_invalid_custom_property_value(value: Any) -> None:
    result = custom(value)
    assert isinstance(result, Reject)
    assert (result.code, result.field) == ("invalid_custom_property_value", "customProperties.prop")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (float("nan"), "nan: not a finite number."),
        (float("-inf"), "-inf: not a finite number."),
        (Decimal("Infinity"), "Infinity: not a finite number."),
        (Decimal("1E+400"), "1E+400: too large for a double."),
        (Decimal("1.5E-400"), "1.5E-400: too near 0 for a double (it would become 0)."),
        (2**64, "18446744073709551616: an integer beyond 64 bits."),
    ],
)
def test_a_number_that_would_change_on_the_way_is_rejected(value: Any, problem: str) -> None:
    result = custom(value)
    assert isinstance(result, Reject)
    assert (result.code, result.field) == ("invalid_number", "customProperties.prop")
    assert result.message == f"customProperties.prop is {problem}"


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        (Decimal("1E+20"), 1e20),
        (Decimal("-0.0"), 0),
        (2**63 - 1, 2**63 - 1),
        (Decimal("1E-310"), 1e-310),
    ],
)
def test_numbers_at_the_edges_of_the_range_are_sent(value: Any, sent: Any) -> None:
    contact = custom(value)
    assert not isinstance(contact, Reject)
    assert contact.payload["customProperties"]["prop"] == sent


def test_custom_property_string_too_long() -> None:
    result = custom("x" * 2049)
    assert isinstance(result, Reject)
    assert result.code == "value_too_long"


def test_spread_custom_properties_from_an_object() -> None:
    plan = plan_for({"email": "e"}, custom_properties={"*": "attrs", "points": "p"})
    contact = mapped(plan, {"e": "a@example.com", "attrs": {"tier": "gold", "x": None}, "p": 5})
    assert contact.payload["customProperties"] == {"tier": "gold", "points": 5}


@pytest.mark.parametrize("name", ["bad name", "", "x" * 129, "ünï"])
def test_invalid_custom_property_name(name: str) -> None:
    plan = plan_for({"email": "e"}, custom_properties={"*": "attrs"})
    reject = rejected(plan, {"e": "a@example.com", "attrs": {name: 1}})
    assert reject.code == "invalid_custom_property_name"


def test_too_many_custom_properties() -> None:
    plan = plan_for({"email": "e"}, custom_properties={"*": "attrs"})
    fine = {f"p{i}": i for i in range(200)}
    assert isinstance(plan.map({"e": "a@example.com", "attrs": fine}), MappedContact)
    reject = rejected(plan, {"e": "a@example.com", "attrs": {**fine, "one_more": 1}})
    assert reject.code == "too_many_custom_properties"


def test_spread_of_a_non_object() -> None:
    plan = plan_for({"email": "e"}, custom_properties={"*": "attrs"})
    assert rejected(plan, {"e": "a@example.com", "attrs": ["a"]}).code == "invalid_type"


# --- whole contacts ---------------------------------------------------------------------------

FULL_RECORD: dict[str, Any] = {
    "id": 7,
    "email": " Ann@Example.com ",
    "phone": "07700 900123",
    "first_name": "Ann",
    "last_name": "Lee",
    "address": {"line1": "1 High St", "city": "Leeds", "zip": "LS1 1AA", "country": "UK"},
    "sex": "female",
    "dob": "1991-07-08",
    "created_at": datetime(2020, 1, 1, tzinfo=timezone.utc),
    "accepts_marketing": True,
    "marketing_updated_at": "2023-06-01T12:00:00Z",
    "lifetime_value": Decimal("120.50"),
    "segments": ["vip"],
}
FULL_MAPPING = {
    "email": "email",
    "phone": "phone",
    "firstName": "first_name",
    "lastName": "last_name",
    "address": "address.line1",
    "city": "address.city",
    "postalCode": "address.zip",
    "country": "address.country",
    "gender": "sex",
    "birthdate": "dob",
    "createdAt": "created_at",
    "emailStatus": "accepts_marketing",
    "emailStatusChangedAt": "marketing_updated_at",
    "tags": "segments",
}


@pytest.mark.parametrize("api_version", [V2026, "v5"])
def test_full_contact_payload(api_version: str) -> None:
    plan = plan_for(
        FULL_MAPPING,
        api_version=api_version,
        custom_properties={"lifetime_value": "lifetime_value", "source_id": "id"},
        status_values={"true": "subscribed", "false": "unsubscribed"},
        default_phone_region="GB",
        tags=["warehouse"],
    )
    record = copy.deepcopy(FULL_RECORD)
    contact = mapped(plan, record, extra_tags=("segment-a",))
    assert record == FULL_RECORD, "the record is not changed"
    date_key = "statusDate" if api_version == "v5" else "statusChangedAt"
    sms = (
        [{"sms": {"status": "nonSubscribed", "statusDate": ANCIENT_DATE}}]
        if api_version == "v5"
        else []
    )
    expected: dict[str, Any] = {
        "identifiers": [
            {
                "type": "email",
                "id": "ann@example.com",
                "channels": {"email": {"status": "subscribed", date_key: "2023-06-01T12:00:00Z"}},
                "sendWelcomeMessage": False,
            },
            {
                "type": "phone",
                "id": "+447700900123",
                **({"channels": sms[0]} if sms else {}),
                "sendWelcomeMessage": False,
            },
        ],
        "firstName": "Ann",
        "lastName": "Lee",
        "address": "1 High St",
        "city": "Leeds",
        "postalCode": "LS1 1AA",
        "gender": "f",
        "birthdate": "1991-07-08",
        "createdAt": "2020-01-01T00:00:00Z",
        "country": "United Kingdom",
        "countryCode": "GB",
        "customProperties": {"lifetime_value": 120.5, "source_id": 7},
    }
    if api_version == "v5":
        expected["tags"] = ["warehouse", "vip", "segment-a"]
    assert contact.payload == expected
    assert contact.tags == ("warehouse", "vip", "segment-a")
    assert contact.key == "ann@example.com"
    json.dumps(contact.payload)  # JSON-ready


def test_first_invalid_value_rejects_the_record_with_its_field() -> None:
    plan = plan_for(FULL_MAPPING, default_phone_region="GB", status_values={"true": "subscribed"})
    record = {**FULL_RECORD, "sex": "unknown"}
    reject = rejected(plan, record)
    assert (reject.code, reject.field) == ("invalid_gender", "gender")


def test_reject_messages_do_not_contain_emails_or_phones() -> None:
    plan = plan_for({"email": "e", "phone": "p"})
    for record in ({"e": "secret.person@nowhere"}, {"p": "+44 1"}, {"p": "07700 900123"}):
        reject = rejected(plan, record)
        assert "secret" not in reject.message
        assert "7700" not in reject.message
        assert "+44" not in reject.message


def test_reject_codes_are_documented() -> None:
    assert all(code.islower() and " " not in code for code in REJECT_CODES)
    assert all(description.endswith(".") for description in REJECT_CODES.values())


ODD_VALUES: tuple[Any, ...] = (
    None,
    "",
    " ",
    "x",
    "a@example.com",
    "+447700900123",
    "07700 900123",
    "x" * 3000,
    0,
    -1,
    10**30,
    1.5,
    float("inf"),
    Decimal("NaN"),
    Decimal("2.5"),
    True,
    False,
    [],
    ["a", 1],
    {},
    {"a": {"b": 1}},
    date(2024, 1, 1),
    datetime(1, 1, 1, tzinfo=timezone.utc),
    "2024-02-30",
    "\udcff",
    "\x00",
)


@pytest.mark.parametrize("api_version", [V2026, "v5"])
def test_map_never_raises_on_odd_values(api_version: str) -> None:
    mapping = {name: name for name in CONTACT_FIELDS}
    plan = plan_for(
        mapping,
        api_version=api_version,
        default_phone_region="US",
        custom_properties={"*": "spread", "single": "single"},
    )
    fields = [*CONTACT_FIELDS, "spread", "single"]
    for index, value in enumerate(ODD_VALUES * 3):
        record = {
            name: ODD_VALUES[(index + position) % len(ODD_VALUES)]
            for position, name in enumerate(fields)
        }
        record[fields[index % len(fields)]] = value
        result = plan.map(record)
        if isinstance(result, MappedContact):
            json.dumps(result.payload, allow_nan=False)
        else:
            assert result.code in REJECT_CODES

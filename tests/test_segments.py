"""Unit tests for segments: tags, membership, exit guards, exit actions, dry-run report."""

from __future__ import annotations

import json
import threading

import pytest

from target_omnisend.mapping import make_getter
from target_omnisend.segments import (
    DEFAULT_MAX_EXIT_RATIO,
    DryRunReport,
    ExitDecision,
    InvalidSegmentValue,
    SegmentMembership,
    compute_exits,
    is_deleted_record,
    membership_key,
    plan_exit_actions,
    render_segment_tag,
    segments_of,
    unsubscribe_payload,
    validate_segment_tag_template,
)
from target_omnisend.summary import mask_phone
from target_omnisend.sync_store import SendReason

MEMBERS = {f"m{index}@x.io" for index in range(10)}


def _exits(previous=MEMBERS, current=MEMBERS, deleted=(), **overrides) -> ExitDecision:
    options = {
        "snapshot_complete": True,
        "ended_normally": True,
        "records_seen": max(len(current), 1),
        "max_exit_ratio": 0.2,
    }
    options.update(overrides)
    return compute_exits(previous, current, deleted, **options)


# -- tags --------------------------------------------------------------------------------------


def test_default_tag_names_the_segment():
    assert render_segment_tag(None, "customers", "customers") == "segment: customers"


def test_template_uses_stream_and_segment():
    assert render_segment_tag("{stream}/{segment}", "crm", "vip") == "crm/vip"
    assert render_segment_tag("{{literal}} {segment}", "crm", "vip") == "{literal} vip"


def test_empty_template_disables_tags():
    assert render_segment_tag("", "crm", "vip") is None


def test_a_tag_that_renders_blank_is_no_tag():
    assert render_segment_tag("{segment}", "crm", "   ") is None


@pytest.mark.parametrize("template", ["{name}", "{segment!r}", "{segment:>10}", "{0}", "{", "}"])
def test_bad_templates_are_refused_with_the_setting_name(template):
    with pytest.raises(ValueError, match="segment_tag"):
        validate_segment_tag_template(template)
    with pytest.raises(ValueError, match="segment_tag"):
        render_segment_tag(template, "crm", "vip")


def test_good_templates_validate():
    for template in (None, "", "segment: {segment}", "{stream}", "plain"):
        validate_segment_tag_template(template)


# -- which segments a record is in -------------------------------------------------------------


def test_without_segment_field_the_stream_is_the_segment():
    assert segments_of({"segment": "x"}, None, "customers") == ["customers"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("vip", ["vip"]),
        ("  vip ", ["vip"]),
        (["vip", "churned", "vip"], ["vip", "churned"]),
        (("a", " ", "b"), ["a", "b"]),
        (42, ["42"]),
        ("a,b", ["a,b"]),
        (None, []),
        ("", []),
        ([], []),
    ],
)
def test_segment_field_values(value, expected):
    assert segments_of({"seg": value}, make_getter("seg"), "crm") == expected


def test_missing_segment_field_means_no_segment():
    assert segments_of({"other": 1}, make_getter("seg"), "crm") == []


def test_nested_segment_field_path():
    record = {"crm": {"lists": ["a", "b"]}}
    assert segments_of(record, make_getter("crm.lists"), "crm") == ["a", "b"]


def test_separator_splits_strings():
    getter = make_getter("seg")
    assert segments_of({"seg": "a, b,,a"}, getter, "crm", separator=",") == ["a", "b"]


@pytest.mark.parametrize("value", [True, {"a": 1}, [["a"]], [{"a": 1}], [False]])
def test_invalid_segment_values_raise(value):
    with pytest.raises(InvalidSegmentValue):
        segments_of({"seg": value}, make_getter("seg"), "crm")


def test_deleted_records_are_recognised():
    assert is_deleted_record({"_sdc_deleted_at": "2026-01-01T00:00:00Z"})
    assert not is_deleted_record({"_sdc_deleted_at": None})
    assert not is_deleted_record({"_sdc_deleted_at": ""})
    assert not is_deleted_record({"email": "a@x.io"})


# -- membership collection ---------------------------------------------------------------------


def test_membership_latest_record_wins():
    seen = SegmentMembership()
    seen.saw("crm", "vip", "a@x.io")
    seen.saw("crm", "vip", "a@x.io", deleted=True)
    seen.saw("crm", "vip", "b@x.io", deleted=True)
    seen.saw("crm", "vip", "b@x.io")
    seen.saw("shop", "churned", "c@x.io")
    for _ in range(4):
        seen.count_record("crm")
    assert seen.current("vip") == {"b@x.io"}
    assert seen.deleted("vip") == {"a@x.io"}
    assert seen.records_seen("crm") == 4
    assert seen.records_seen("shop") == 0
    assert seen.streams() == ["crm", "shop"]
    assert seen.segments_of_stream("crm") == ["vip"]
    assert seen.in_other_segments("vip") == {"c@x.io"}
    assert seen.in_other_segments("churned") == {"b@x.io"}


def test_membership_counts_records_of_streams_without_members():
    seen = SegmentMembership()
    seen.count_record("crm")  # e.g. a rejected record
    assert seen.streams() == ["crm"]
    assert seen.segments_of_stream("crm") == []
    assert seen.current("vip") == set()


def test_one_stream_may_name_several_segments():
    seen = SegmentMembership()
    seen.saw("crm", "segment: a", "x@x.io")
    seen.saw("crm", "segment: b", "x@x.io")
    seen.saw("crm", "segment: b", "y@x.io")
    assert seen.segments_of_stream("crm") == ["segment: a", "segment: b"]
    assert seen.in_other_segments("segment: a") == {"x@x.io", "y@x.io"}


def test_membership_is_thread_safe():
    seen = SegmentMembership()

    def work(worker: int) -> None:
        for index in range(500):
            seen.saw("crm", "vip", f"{worker}-{index}@x.io")
            seen.count_record("crm")

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen.current("vip")) == 2000
    assert seen.records_seen("crm") == 2000


def test_membership_key_is_the_tag_or_the_default_rendering():
    assert membership_key(None, "crm", "vip") == "segment: vip"
    assert membership_key("{stream}:{segment}", "crm", "vip") == "crm:vip"
    assert membership_key("", "crm", "vip") == "segment: vip"


# -- exit guards -------------------------------------------------------------------------------


def test_members_absent_from_a_full_snapshot_leave():
    current = MEMBERS - {"m1@x.io", "m2@x.io"} | {"new@x.io"}
    decision = _exits(current=current)
    assert decision.leaving == {"m1@x.io", "m2@x.io"}
    assert decision.skipped_reason is None
    assert not decision.exceeds_ratio
    assert decision.members_before == 10
    assert decision.would_leave == 2


def test_unchanged_segment_has_no_exits():
    decision = _exits()
    assert decision.leaving == frozenset()
    assert decision.skipped_reason is None


def test_interrupted_run_removes_nobody():
    decision = _exits(current={"m0@x.io"}, ended_normally=False)
    assert decision.leaving == frozenset()
    assert "normal end" in decision.skipped_reason
    assert not decision.exceeds_ratio


def test_empty_stream_removes_nobody():
    decision = _exits(current=set(), records_seen=0)
    assert decision.leaving == frozenset()
    assert "no records" in decision.skipped_reason
    assert not decision.exceeds_ratio


def test_partial_stream_removes_only_explicit_deletions():
    current = {"m0@x.io", "m1@x.io"}
    decision = _exits(current=current, deleted={"m9@x.io"}, snapshot_complete=False)
    assert decision.leaving == {"m9@x.io"}
    assert "not a full snapshot" in decision.skipped_reason
    assert not decision.exceeds_ratio


def test_partial_stream_without_deletions_removes_nobody():
    decision = _exits(current={"m0@x.io"}, snapshot_complete=False)
    assert decision.leaving == frozenset()
    assert "not a full snapshot" in decision.skipped_reason


def test_deleted_records_leave_a_full_snapshot_too():
    current = MEMBERS - {"m3@x.io"}
    decision = _exits(current=current, deleted={"m3@x.io"})
    assert decision.leaving == {"m3@x.io"}


def test_deletions_of_non_members_or_current_members_are_ignored():
    decision = _exits(deleted={"stranger@x.io", "m0@x.io"}, snapshot_complete=False)
    assert decision.leaving == frozenset()


def test_ratio_at_the_limit_is_allowed():
    current = MEMBERS - {"m1@x.io", "m2@x.io"}  # 2 of 10 = 20%
    decision = _exits(current=current, max_exit_ratio=0.2)
    assert decision.leaving == {"m1@x.io", "m2@x.io"}
    assert not decision.exceeds_ratio


def test_ratio_above_the_limit_removes_nobody_and_fails_the_run():
    current = MEMBERS - {"m1@x.io", "m2@x.io", "m3@x.io"}  # 3 of 10 = 30%
    decision = _exits(current=current, max_exit_ratio=0.2)
    assert decision.leaving == frozenset()
    assert decision.exceeds_ratio
    assert decision.would_leave == 3
    assert decision.skipped_reason.startswith(
        "3 of 10 members (30.0%) would leave; max_exit_ratio is 0.2."
    )


def test_default_ratio_is_one_fifth():
    assert DEFAULT_MAX_EXIT_RATIO == 0.2
    decision = compute_exits(
        MEMBERS,
        {"m0@x.io"},
        snapshot_complete=True,
        ended_normally=True,
        records_seen=1,
    )
    assert decision.exceeds_ratio


def test_ratio_guard_applies_to_explicit_deletions():
    deleted = {"m1@x.io", "m2@x.io", "m3@x.io"}
    decision = _exits(current={"m0@x.io"}, deleted=deleted, snapshot_complete=False)
    assert decision.exceeds_ratio
    assert decision.leaving == frozenset()


def test_ratio_of_one_allows_everyone_to_leave_and_zero_allows_nobody():
    current = {"other@x.io"}
    assert _exits(current=current, max_exit_ratio=1.0).leaving == MEMBERS
    zero = _exits(current=MEMBERS - {"m1@x.io"}, max_exit_ratio=0.0)
    assert zero.exceeds_ratio
    assert _exits(max_exit_ratio=0.0).leaving == frozenset()


def test_negative_ratio_is_refused():
    with pytest.raises(ValueError, match="max_exit_ratio"):
        _exits(max_exit_ratio=-0.1)


def test_new_segment_has_no_exits():
    decision = _exits(previous=set(), current={"a@x.io"})
    assert decision.leaving == frozenset()
    assert not decision.exceeds_ratio
    assert decision.members_before == 0


def test_protected_contacts_are_reported():
    current = MEMBERS - {"m1@x.io", "m2@x.io"}
    decision = _exits(current=current, protected={"m1@x.io", "unrelated@x.io"})
    assert decision.protected == {"m1@x.io"}
    assert decision.unsubscribable == {"m2@x.io"}


# -- exit actions ------------------------------------------------------------------------------


def _two_leave() -> ExitDecision:
    return _exits(current=MEMBERS - {"m1@x.io", "m2@x.io"}, protected={"m1@x.io"})


def test_keep_changes_nothing_in_omnisend():
    actions = plan_exit_actions("keep", "segment: vip", _two_leave())
    assert actions.untag == frozenset()
    assert actions.unsubscribe == frozenset()
    assert actions.leaving == {"m1@x.io", "m2@x.io"}


def test_remove_tag_untags_every_leaver_including_protected():
    actions = plan_exit_actions("remove_tag", "segment: vip", _two_leave())
    assert actions.tag == "segment: vip"
    assert actions.untag == {"m1@x.io", "m2@x.io"}
    assert actions.unsubscribe == frozenset()


def test_unsubscribe_never_touches_contacts_in_another_segment_of_the_run():
    actions = plan_exit_actions("unsubscribe", "segment: vip", _two_leave())
    assert actions.untag == {"m1@x.io", "m2@x.io"}
    assert actions.unsubscribe == {"m2@x.io"}


def test_without_a_segment_tag_nothing_is_untagged():
    actions = plan_exit_actions("unsubscribe", None, _two_leave())
    assert actions.untag == frozenset()
    assert actions.unsubscribe == {"m2@x.io"}


def test_blocked_decision_yields_no_actions():
    blocked = _exits(current={"m0@x.io"})
    assert blocked.exceeds_ratio
    actions = plan_exit_actions("unsubscribe", "segment: vip", blocked)
    assert actions.untag == actions.unsubscribe == actions.leaving == frozenset()


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="on_segment_exit"):
        plan_exit_actions("delete", "segment: vip", _two_leave())


# -- unsubscribe payloads ----------------------------------------------------------------------


def test_unsubscribe_payload_2026():
    payload = unsubscribe_payload("a@x.io", "2026-03-15", now="2026-11-25T08:00:00Z")
    assert payload == {
        "identifiers": [
            {
                "type": "email",
                "id": "a@x.io",
                "channels": {
                    "email": {"status": "unsubscribed", "statusChangedAt": "2026-11-25T08:00:00Z"}
                },
                "sendWelcomeMessage": False,
            }
        ]
    }


def test_unsubscribe_payload_v5():
    payload = unsubscribe_payload("a@x.io", "v5", now="2026-11-25T08:00:00Z")
    channel = payload["identifiers"][0]["channels"]["email"]
    assert channel == {"status": "unsubscribed", "statusDate": "2026-11-25T08:00:00Z"}
    assert payload["identifiers"][0]["sendWelcomeMessage"] is False


def test_unsubscribe_payload_for_a_phone_only_contact_uses_sms():
    identifier = unsubscribe_payload("+447700900123", "2026-03-15")["identifiers"][0]
    assert identifier["type"] == "phone"
    assert identifier["channels"]["sms"]["status"] == "unsubscribed"


def test_unsubscribe_payload_is_dated_now():
    stamp = unsubscribe_payload("a@x.io", "2026-03-15")["identifiers"][0]["channels"]["email"][
        "statusChangedAt"
    ]
    assert stamp.endswith("Z")
    assert stamp > "2026-01-01T00:00:00Z"


def test_unsubscribe_payload_honours_send_welcome_message():
    payload = unsubscribe_payload("a@x.io", "v5", send_welcome_message=True)
    assert payload["identifiers"][0]["sendWelcomeMessage"] is True


# -- dry-run report ----------------------------------------------------------------------------


def test_dry_run_report_counts_and_masks():
    report = DryRunReport(sample_size=2)
    report.add_send_reasons(
        {
            "jane.doe@example.com": SendReason.NEW,
            "b@example.com": SendReason.NEW,
            "c@example.com": SendReason.NEW,
            "d@example.com": SendReason.CHANGED,
            "e@example.com": SendReason.STALE,
            "f@example.com": SendReason.UNCHANGED,
        }
    )
    report.add("tagged", ["jane.doe@example.com"])
    report.add("untagged", ["+447700900123"])
    result = report.to_dict()
    assert result["would"] == {
        "created": 3,
        "updated": 2,
        "unchanged": 1,
        "tagged": 1,
        "untagged": 1,
        "unsubscribed": 0,
    }
    assert result["sample"]["created"] == ["j***@e***.com", "b***@e***.com"]
    assert result["sample"]["untagged"] == [mask_phone("+447700900123")]
    assert "7700900" not in json.dumps(result)
    assert "unsubscribed" not in result["sample"]
    text = json.dumps(result)
    assert "jane.doe" not in text
    assert "example.com" not in text


def test_dry_run_report_refuses_unknown_categories():
    with pytest.raises(ValueError, match="category"):
        DryRunReport().add("deleted", ["a@x.io"])

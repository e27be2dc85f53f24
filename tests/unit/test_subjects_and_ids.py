import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import ids, subjects


def test_subjects_carry_tenant_and_internal_ids() -> None:
    cid = ids.conversation_id(account_id="acme-fb", thread_id="104857600000001_900000000000001")
    assert subjects.interaction_received(tenant_id="acme", account_id="acme-fb") == "sh.ix.acme.acme-fb"
    assert subjects.conversation_event(tenant_id="acme", conversation_id=cid, event="assigned") == (
        f"sh.conv.acme.{cid}.assigned"
    )
    assert subjects.deadline(tenant_id="acme", conversation_id=cid) == f"sh.deadline.acme.{cid}"


@pytest.mark.parametrize("bad", ["a.b", "at://did:plc:x/app.bsky.feed.post/1", "*", ">", "A B", ""])
def test_subjects_refuse_raw_platform_ids(bad: str) -> None:
    with pytest.raises(ValueError):
        subjects.interaction_received(tenant_id="acme", account_id=bad)


def test_derived_ids_are_deterministic_and_distinct() -> None:
    a = ids.interaction_id(tenant_id="t", account_id="a", external_id="m1", edit_version=0)
    assert a == ids.interaction_id(tenant_id="t", account_id="a", external_id="m1", edit_version=0)
    assert a != ids.interaction_id(tenant_id="t", account_id="a", external_id="m1", edit_version=1)
    assert a != ids.interaction_id(tenant_id="t", account_id="b", external_id="m1", edit_version=0)
    assert ids.conversation_id(account_id="a", thread_id="x") != ids.conversation_id(
        account_id="b", thread_id="x"
    )


def test_dedupe_key_names_tenant_account_message_and_edit() -> None:
    key = ids.dedupe_key(tenant_id="t", account_id="a", external_id="m_1", edit_version=2)
    assert key == "ix:t:a:m_1:2"


def test_a_trailing_newline_is_no_slug() -> None:
    """Python's `$` matches before a final newline: a slug goes into NATS subjects and URLs."""
    from shared.ids import is_slug

    assert is_slug("acme") and not is_slug("acme\n") and not is_slug("acme\r\n")


@given(st.lists(st.text(), min_size=1, max_size=5))
def test_derived_ids_are_the_uuid5_of_their_parts_digit_for_digit(parts: list[str]) -> None:
    """Stored rows name conversations and interactions by these ids: they must never change."""
    assert ids._derive(*parts) == uuid.uuid5(ids._NAMESPACE, "\x1f".join(parts)).hex


def test_a_conversation_id_is_the_one_stored_since_the_first_release() -> None:
    assert ids.conversation_id(account_id="acme-fb", thread_id="t1") == (
        uuid.uuid5(uuid.UUID("5b0f3f4e-6a53-4d1e-9a59-2b1c8d7e0c11"), "conversation\x1facme-fb\x1ft1").hex
    )

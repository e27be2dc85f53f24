"""The turns of a reply: a reply that may have gone out is never posted again on a platform
that does not dedupe, unless its thread shows it did not go out."""

import itertools
from datetime import UTC, datetime

import pytest

from services.outbound.decisions import (
    Next,
    Seen,
    after_lost,
    after_refused,
    after_unanswered,
    given_up,
    recorded,
)
from shared.events import InteractionReceived


@pytest.mark.parametrize(
    ("idempotent", "seen", "expected"),
    [
        (False, Seen.there, Next.sent),
        (False, Seen.absent, Next.post),
        (False, Seen.unknown, Next.in_doubt),
        (True, Seen.there, Next.sent),
        (True, Seen.absent, Next.post),
        (True, Seen.unknown, Next.post),
    ],
)
def test_an_unanswered_attempt_is_posted_again_only_where_it_cannot_double(
    idempotent: bool, seen: Seen, expected: Next
) -> None:
    assert after_unanswered(idempotent=idempotent, seen=seen) is expected


@pytest.mark.parametrize(
    ("expired", "retry", "refreshed", "last", "expected"),
    [
        (True, False, False, False, Next.refresh),
        (True, False, False, True, Next.refresh),  # renewing costs no delivery
        (True, False, True, False, Next.failed),  # refreshed and still refused: the connection is failing
        (False, True, False, False, Next.later),  # a rate limit waits
        (False, True, False, True, Next.failed),  # ... while a delivery is left
        (False, False, False, False, Next.failed),  # the platform's own refusal
    ],
)
def test_a_refusal(expired: bool, retry: bool, refreshed: bool, last: bool, expected: Next) -> None:
    assert after_refused(expired=expired, retry=retry, refreshed=refreshed, last_delivery=last) is expected


@pytest.mark.parametrize(
    ("idempotent", "seen", "last", "expected"),
    [
        (True, None, False, Next.later),  # the next delivery posts again under the same key
        (True, None, True, Next.in_doubt),
        (False, Seen.there, False, Next.sent),
        (False, Seen.there, True, Next.sent),
        (False, Seen.absent, False, Next.later),  # looked at again before any post
        (False, Seen.absent, True, Next.in_doubt),
        (False, Seen.unknown, False, Next.in_doubt),
        (False, Seen.unknown, True, Next.in_doubt),
    ],
)
def test_a_lost_answer(idempotent: bool, seen: Seen | None, last: bool, expected: Next) -> None:
    assert after_lost(idempotent=idempotent, seen=seen, last_delivery=last) is expected


def test_no_turn_posts_what_may_have_gone_out_where_the_platform_does_not_dedupe() -> None:
    """Walk every case: on Meta, X and YouTube, a reply whose answer was lost is posted again
    only after its thread was read and it was not there; never sent twice, never dropped
    silently (every turn ends in sent, failed, in doubt, or another delivery)."""
    for seen in Seen:
        step = after_unanswered(idempotent=False, seen=seen)
        assert step is not Next.post or seen is Seen.absent
    for seen, last in itertools.product([*Seen, None], [False, True]):
        step = after_lost(idempotent=False, seen=seen, last_delivery=last)
        assert step is not Next.post  # a lost answer never posts in the same turn
        assert step in (Next.sent, Next.later, Next.in_doubt)
        if step is Next.later:
            assert seen is Seen.absent  # and the next delivery reads the thread again first
    for expired, retry, refreshed, last in itertools.product([False, True], repeat=4):
        assert after_refused(expired=expired, retry=retry, refreshed=refreshed, last_delivery=last) in (
            Next.refresh, Next.later, Next.failed,
        )  # fmt: skip


def test_what_a_platform_answers_is_kept_only_as_an_interaction_can_carry_it() -> None:
    """A hostile or broken answer (a webhook receiver's id with a newline, a link to javascript:)
    must not leave a reply sent whose interaction can never be published."""
    assert recorded("m_123", "https://x.example/1", fallback="k") == ("m_123", "https://x.example/1")
    assert recorded("bad\nid", None, fallback="other:k") == ("other:k", None)
    assert recorded("x" * 513, None, fallback="other:k") == ("other:k", None)
    assert recorded("", None, fallback="other:k") == ("other:k", None)
    assert recorded("ok", "javascript:alert(1)", fallback="k") == ("ok", None)
    assert recorded("ok", "https://x.example/\u0000", fallback="k") == ("ok", None)
    assert recorded("ok", "https://x.example/" + "a" * 2048, fallback="k") == ("ok", None)
    platform_id, url = recorded("\ud800", "https://x.example/ok", fallback="other:k")
    ix = InteractionReceived(
        tenant_id="acme", interaction_id="i" * 32, account_id="a", platform="other", external_id=platform_id,
        kind="reply", direction="outbound", thread_id="t", author={"id": "brand"}, text="hi", url=url,
        created_at=datetime.now(UTC), received_at=datetime.now(UTC),
    )  # fmt: skip
    assert ix.external_id == "other:k"


def test_giving_up_says_in_doubt_only_where_an_attempt_may_have_gone_out() -> None:
    assert given_up(attempt_recorded=True) is Next.in_doubt
    assert given_up(attempt_recorded=False) is Next.failed

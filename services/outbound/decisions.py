"""What to do with a reply at each turn: pure, no I/O, so the rule "never posted twice" is
one small table a test can walk completely.

Three moments decide:
- a delivery finds an attempt recorded without its answer (`after_unanswered`);
- the platform refused (`after_refused`);
- the platform's answer was lost (`after_lost`).

Where a reply may have gone out, it is posted again only on a platform that dedupes on our
key (`idempotent`), or once the thread shows it did not go out (`Seen.absent`).
"""

import enum


class Seen(enum.StrEnum):
    """What reading the thread (or the stored echo) said of a reply whose answer was lost."""

    there = "there"  # it went out: its platform id is known
    absent = "absent"  # surely not there
    unknown = "unknown"  # the thread could not be read


class Next(enum.StrEnum):
    post = "post"  # make the (next) attempt
    sent = "sent"  # record it sent (found in the thread)
    refresh = "refresh"  # renew the token, then post
    later = "later"  # deliver the command again later: nothing went out, or look again first
    failed = "failed"  # nothing went out and nothing will
    in_doubt = "in_doubt"  # it may have gone out and nothing can tell: a person checks


def after_unanswered(*, idempotent: bool, seen: Seen) -> Next:
    """A delivery finds an attempt recorded and no answer (the service died mid-post, or the
    answer was lost): what it does before anything else."""
    if seen is Seen.there:
        return Next.sent
    if seen is Seen.absent or idempotent:
        return Next.post
    return Next.in_doubt


def after_refused(*, expired: bool, retry: bool, refreshed: bool, last_delivery: bool) -> Next:
    """The platform said no (nothing went out). An expired token is renewed once per delivery;
    a refusal worth retrying waits for a later delivery while there is one."""
    if expired and not refreshed:
        return Next.refresh
    if retry and not last_delivery:
        return Next.later
    return Next.failed


def after_lost(*, idempotent: bool, seen: Seen | None, last_delivery: bool) -> Next:
    """The platform's answer did not come. On a platform that dedupes on our key the next
    delivery simply posts again (`seen` is not asked); on the others the thread was read
    (`seen`): found is sent, surely absent is looked at again on the next delivery before any
    post, and unknown is in doubt. With no delivery left, what is not known sent is in doubt."""
    if seen is Seen.there:
        return Next.sent
    if last_delivery:
        return Next.in_doubt
    if idempotent or seen is Seen.absent:
        return Next.later
    return Next.in_doubt


def given_up(*, attempt_recorded: bool) -> Next:
    """No delivery is left and the reply is still being sent: in doubt if an attempt may have
    reached the platform, else failed (nothing went out)."""
    return Next.in_doubt if attempt_recorded else Next.failed


def recorded(platform_id: str, url: str | None, *, fallback: str) -> tuple[str, str | None]:
    """What is kept of a platform's answer: its id if an interaction can carry it (1 to 512
    characters, no control characters), else `fallback` (the reply's own key, so the reply is
    still recorded and answers the conversation); its link only if a person may follow it."""
    if not (0 < len(platform_id) <= 512) or not _clean(platform_id):
        platform_id = fallback
    if url is not None and not (
        len(url) <= 2048 and url.lower().startswith(("https://", "http://")) and _clean(url)
    ):
        url = None
    return platform_id, url


def _clean(text: str) -> bool:
    return not any(
        ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF for ch in text
    )

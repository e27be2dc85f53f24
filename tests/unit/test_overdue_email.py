from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from services.notify.compose import alert_key, compose_alert, waited
from services.notify.ports import OverdueContext, Recipient
from services.notify.senders import email_of
from services.notify.templates import Templates
from shared.events import AlertKind

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SENDER = "StayHuman <alerts@acme.example>"


def context(**changes: object) -> OverdueContext:
    values: dict[str, object] = {
        "conversation_id": "a" * 32,
        "deadline_version": 2,
        "tenant_name": "Bluebird Coffee",
        "account_id": "bluebird-fb",
        "account_handle": "Bluebird Coffee",
        "platform": "facebook",
        "author_name": "Dana Reyes",
        "text": "Is the oat latte back?\nAsking for a friend.",
        "url": "https://facebook.example/p/1",
        "waiting_since": T0,
        "due_at": T0 + timedelta(minutes=30),
        "owner": Recipient("Maria Lopez", "maria@example.com", "maria"),
        "team": [
            Recipient("Maria Lopez", "maria@example.com", "maria"),
            Recipient("Li Wei", "li@example.com", "li"),
        ],
    }
    values.update(changes)
    return OverdueContext(**values)  # type: ignore[arg-type]


def overdue(ctx: OverdueContext, to: list[Recipient], now: datetime = T0) -> EmailMessage:
    message = compose_alert(
        ctx,
        kind=AlertKind.breach,
        step="breach",
        to=to,
        now=now,
        ack_url="https://n.example/ack/T",
        templates=Templates(),
    )
    return email_of(message, sender=SENDER)


def test_subject_names_tenant_platform_author_and_wait() -> None:
    ctx = context()
    email = overdue(ctx, [ctx.team[0]], T0 + timedelta(minutes=31, seconds=5))
    assert (
        email["Subject"]
        == "[Bluebird Coffee] Overdue on Facebook: Dana Reyes has waited 31 minutes 5 seconds"
    )
    assert email["To"] == "Maria Lopez <maria@example.com>"


def test_message_id_is_deterministic_per_conversation_and_version() -> None:
    ctx = context()
    assert overdue(ctx, [ctx.team[0]])["Message-ID"] == f"<overdue.{'a' * 32}.v2@acme.example>"
    assert alert_key("breach", "a" * 32, 3) != alert_key("breach", "a" * 32, 2)
    assert alert_key("escalation-1", "a" * 32, 2) == f"escalation-1.{'a' * 32}.v2"


def test_waited_reads_like_a_person_would_say_it() -> None:
    assert waited(timedelta(seconds=47)) == "47 seconds"
    assert waited(timedelta(minutes=1)) == "1 minute"
    assert waited(timedelta(hours=2, minutes=5, seconds=9)) == "2 hours 5 minutes"
    assert waited(timedelta(days=3, hours=4)) == "3 days 4 hours"
    assert waited(timedelta(seconds=-3)) == "0 seconds"

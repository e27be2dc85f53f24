from datetime import UTC, datetime, timedelta

from services.notify.email import OverdueContext, Recipient, compose_overdue, message_id, waited

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


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
        "owner": Recipient("Maria Lopez", "maria@example.com"),
        "team": [Recipient("Maria Lopez", "maria@example.com"), Recipient("Li Wei", "li@example.com")],
    }
    values.update(changes)
    return OverdueContext(**values)  # type: ignore[arg-type]


def test_subject_names_tenant_platform_author_and_wait() -> None:
    message = compose_overdue(
        context(), now=T0 + timedelta(minutes=31, seconds=5), sender="StayHuman <a@b.example>"
    )
    assert (
        message["Subject"]
        == "[Bluebird Coffee] Overdue on Facebook: Dana Reyes has waited 31 minutes 5 seconds"
    )
    assert message["To"] == "Maria Lopez <maria@example.com>"


def test_body_quotes_the_text_and_links_to_it() -> None:
    body = compose_overdue(context(), now=T0, sender="a@b.example").get_content()
    assert "> Is the oat latte back?\n> Asking for a friend." in body
    assert "Answer it on Facebook: https://facebook.example/p/1" in body
    assert "Hi Maria Lopez," in body
    no_link = compose_overdue(context(url=None), now=T0, sender="a@b.example").get_content()
    assert "gave no link" in no_link


def test_unassigned_conversations_go_to_the_team() -> None:
    message = compose_overdue(context(owner=None), now=T0, sender="a@b.example")
    assert message["To"] == "Maria Lopez <maria@example.com>, Li Wei <li@example.com>"
    assert "Hi team," in message.get_content()


def test_message_id_is_deterministic_per_conversation_and_version() -> None:
    one = message_id(context(), "StayHuman <alerts@acme.example>")
    assert one == f"<overdue.{'a' * 32}.v2@acme.example>"
    assert one == compose_overdue(context(), now=T0, sender="StayHuman <alerts@acme.example>")["Message-ID"]
    assert one != message_id(context(deadline_version=3), "alerts@acme.example")


def test_waited_reads_like_a_person_would_say_it() -> None:
    assert waited(timedelta(seconds=47)) == "47 seconds"
    assert waited(timedelta(minutes=1)) == "1 minute"
    assert waited(timedelta(hours=2, minutes=5, seconds=9)) == "2 hours 5 minutes"
    assert waited(timedelta(days=3, hours=4)) == "3 days 4 hours"
    assert waited(timedelta(seconds=-3)) == "0 seconds"

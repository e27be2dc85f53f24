from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.notify.email import OverdueContext, Recipient, compose_alert
from services.notify.templates import Templates

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def context(**changes: object) -> OverdueContext:
    values: dict[str, object] = {
        "conversation_id": "c" * 32,
        "deadline_version": 2,
        "tenant_name": "Bluebird <Coffee>",
        "account_id": "bluebird-fb",
        "account_handle": "Bluebird",
        "platform": "facebook",
        "author_name": "Dana",
        "text": "Is the <b>oat</b> latte back?",
        "url": "https://facebook.example/p/1",
        "waiting_since": T0,
        "due_at": T0 + timedelta(minutes=30),
        "owner": Recipient("Maria", "maria@example.com", "maria"),
        "team": [],
        "tenant_id": "bluebird",
    }
    values.update(changes)
    return OverdueContext(**values)  # type: ignore[arg-type]


def compose(templates: Templates, kind: str = "breach", **changes: object) -> tuple[str, str, str]:
    ctx = context(**changes)
    message = compose_alert(
        ctx, kind=kind, step=kind, to=[ctx.owner] if ctx.owner else [], now=T0 + timedelta(minutes=31),
        sender="StayHuman <alerts@example.com>", ack_url="https://notify.example/ack/T", templates=templates,
    )  # fmt: skip
    text = message.get_body(preferencelist=("plain",))
    page = message.get_body(preferencelist=("html",))
    assert text is not None and page is not None
    return str(message["Subject"]), text.get_content(), page.get_content()


def test_built_in_templates_say_what_happened_with_both_links() -> None:
    subject, text, page = compose(Templates())
    assert subject == "[Bluebird <Coffee>] Overdue on Facebook: Dana has waited 31 minutes"
    assert "> Is the <b>oat</b> latte back?" in text
    assert "Open the conversation: https://facebook.example/p/1" in text
    assert "I'm on it (stops the escalation): https://notify.example/ack/T" in text
    # in HTML every value is escaped
    assert "Is the &lt;b&gt;oat&lt;/b&gt; latte back?" in page and "<b>oat</b>" not in page
    assert "Bluebird &lt;Coffee&gt;" in page
    assert '<a href="https://notify.example/ack/T">' in page


def test_each_kind_has_its_own_words() -> None:
    assert compose(Templates(), "warning")[0].startswith("[Bluebird <Coffee>] Due soon on Facebook")
    subject, text, _ = compose(Templates(), "escalation")
    assert subject.startswith("[Bluebird <Coffee>] Escalated: Dana on Facebook")
    assert "It is owned by Maria" in text


def test_a_tenant_overrides_a_template_and_others_keep_theirs(tmp_path: Path) -> None:
    (tmp_path / "bluebird").mkdir()
    (tmp_path / "bluebird" / "breach.subject").write_text("Bluebird: $author waits ($waited)")
    (tmp_path / "bluebird" / "breach.txt").write_text("Dear $greeting $text -- $ack_url")
    (tmp_path / "breach.html").write_text("<p>$text</p>")  # for every tenant
    subject, text, page = compose(Templates(tmp_path))
    assert subject == "Bluebird: Dana waits (31 minutes)"
    assert text == "Dear Hi Maria, Is the <b>oat</b> latte back? -- https://notify.example/ack/T\n"
    assert page.strip() == "<p>Is the &lt;b&gt;oat&lt;/b&gt; latte back?</p>"
    other, _, _ = compose(Templates(tmp_path), tenant_id="acme")
    assert other.startswith("[Bluebird <Coffee>] Overdue on Facebook")  # acme has no override of its own

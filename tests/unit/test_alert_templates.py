from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pytest

from services.notify.compose import DigestItem, compose_alert, compose_digest
from services.notify.ports import OverdueContext, Recipient
from services.notify.senders import email_of
from services.notify.templates import Templates
from shared.events import AlertKind

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


def compose(
    templates: Templates, kind: AlertKind = AlertKind.breach, **changes: object
) -> tuple[str, str, str]:
    ctx = context(**changes)
    message = email_of(
        compose_alert(
            ctx, kind=kind, step=kind, to=[ctx.owner] if ctx.owner else [], now=T0 + timedelta(minutes=31),
            ack_url="https://notify.example/ack/T", templates=templates,
        ),
        sender="StayHuman <alerts@example.com>",
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
    assert compose(Templates(), AlertKind.warning)[0].startswith("[Bluebird <Coffee>] Due soon on Facebook")
    subject, text, _ = compose(Templates(), AlertKind.escalation)
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


def test_without_a_link_from_the_platform_no_placeholder_becomes_a_link() -> None:
    _, text, page = compose(Templates(), url=None)
    assert "Open the conversation" not in page and 'href="(' not in page and 'href=""' not in page
    assert "The platform gave no link to this message: answer it on Facebook (Bluebird)." in text
    assert "answer it on Facebook (Bluebird)" in page
    assert '<a href="https://notify.example/ack/T">' in page  # the acknowledge link stays


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(document.cookie)",
        "JavaScript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "file:///etc/passwd",
        "//evil.example/x",
        "https://",
        "https://ok.example/\nInjected: header",
    ],
)
def test_only_http_and_https_links_are_ever_rendered_as_links(tmp_path: Path, url: str) -> None:
    _, text, page = compose(Templates(), url=url)
    assert "href" not in page.replace('href="https://notify.example/ack/T"', "")
    assert f"Open the conversation: {url}" not in text
    # an operator's template that puts the link in an href gets nothing to render
    (tmp_path / "breach.html").write_text('<a href="$open_url">open</a> <a href="$push_url">push</a>')
    _, _, custom = compose(Templates(tmp_path), url=url)
    assert custom.strip() == '<a href="">open</a> <a href="">push</a>'
    # a real link is a link
    _, _, page = compose(Templates(), url="https://facebook.example/p/1?a=1&b=2")
    assert '<a href="https://facebook.example/p/1?a=1&amp;b=2">Open the conversation</a>' in page


def digest(*contexts: OverdueContext) -> EmailMessage:
    items = [DigestItem(c, AlertKind.breach, "breach", "https://notify.example/ack/T") for c in contexts]
    to = Recipient("Maria", "maria@example.com", "maria")
    return email_of(
        compose_digest(items, to=to, now=T0 + timedelta(minutes=31)), sender="StayHuman <a@example.com>"
    )


def test_a_grouped_alert_counts_in_the_singular_and_names_its_tenants() -> None:
    one = digest(context())
    assert one["Subject"] == "[Bluebird <Coffee>] 1 conversation needs you: 1 overdue"
    text = one.get_body(preferencelist=("plain",))
    assert text is not None and "1 conversation needs an answer:" in text.get_content()
    two = digest(context(), context(tenant_name="Acme", url=None, conversation_id="d" * 32))
    assert two["Subject"] == "[Acme, Bluebird <Coffee>] 2 conversations need you: 2 overdue"
    page = two.get_body(preferencelist=("html",))
    assert page is not None
    html_text = page.get_content()
    assert html_text.count(">Open</a>") == 1  # the conversation without a link has none
    assert 'href=""' not in html_text


def test_a_digest_never_links_an_unsafe_url() -> None:
    page = digest(context(url="javascript:alert(1)")).get_body(preferencelist=("html",))
    assert page is not None and "javascript:" not in page.get_content()

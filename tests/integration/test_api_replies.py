"""Replying from the inbox (SQLite and PostgreSQL, no NATS: the commands are kept in memory): a
person's reply becomes one `SendReply` with their id and their session's SHA-256; a token, a
stranger to the conversation, a closed window and a text too long send nothing and say why;
the replies of a conversation are listed with the platform's rules for it now; and the page
shows the reply box with those rules before anything is typed.

kettle: team care (lead rosa; kai and sam), its Facebook page connected for replies (comments
and Messenger), its Instagram account connected, its X account not connected; tina is its
admin, vera its client viewer. northwind: team north (nils), its page connected. The clock
stands still on Wednesday 2026-11-25 at 10:00 UTC.
"""

import asyncio
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from playwright.async_api import expect
from sqlalchemy import update
from sqlmodel import col

from services.api.actions import KeptCommands, Sendable
from shared import ids, subjects
from shared.commands import ReplyMethod, SendReply, subject_of
from shared.db.core import execute
from shared.db.migrate import upgrade
from shared.db.models import AccountRow, CommandOutcomeRow, ReplyRow, ReplyTokenRow, TimelineRow
from shared.db.session import transaction
from stayhuman.natsserver import free_port
from tests.api_world import Clock, SignedIn, World, bearer, build_api, client, close_api
from tests.browser import accessibility_problems, playwright_browser
from tests.fake_platforms import _serve
from tests.fuzz import mutated, properties, raw_bodies

T = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
SEALED = "sealed:page-token"  # what `apply` keeps of an account's reply credentials (never read here)
PAGE_URL = "https://www.facebook.com/kettle/posts/1?comment_id=c-1"


@dataclass
class Agency:
    world: World
    care: str = ""
    north: str = ""
    signed: dict[str, SignedIn] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def as_(self, person: str) -> dict[str, str]:
        return self.signed[person].headers

    async def conversation(
        self,
        account: str = "kettle-fb",
        *,
        kind: str = "comment",
        owner: str | None = "kai",
        last: timedelta = timedelta(minutes=30),
        **interaction: Any,
    ) -> tuple[str, str]:
        """A conversation whose customer wrote one message `last` ago: (conversation, message)."""
        tenant = "northwind" if account.startswith("north") else "kettle"
        platform = {"ig": "instagram", "x": "x"}.get(account.split("-")[-1], "facebook")
        at = T - last
        conversation = await self.world.conversation(
            tenant,
            account,
            team_id=self.north if tenant == "northwind" else self.care,
            owner_id=owner,
            platform=platform,
            opened_at=at,
        )
        interaction.setdefault("url", PAGE_URL)
        message = await self.world.interaction(conversation, kind=kind, created_at=at, **interaction)
        return conversation, message


async def connect(world: World, account: str, *, external_id: str | None = None) -> None:
    """The account connected for replies, as `apply` leaves it (sealed credentials)."""
    async with transaction(world.sessions) as session:
        await execute(
            session,
            update(AccountRow)
            .where(col(AccountRow.id) == account)
            .values(reply_credentials=SEALED, external_id=external_id),
        )


@pytest.fixture
async def agency(database_url: str) -> AsyncIterator[Agency]:
    async with World(database_url) as world:
        agency = Agency(world)
        await world.tenant("kettle", name="Kettle Coffee")
        await world.tenant("northwind", name="Northwind Tea")
        for person in ("rosa", "kai", "sam", "nils", "tina", "vera"):
            await world.person(person, name=person.title())
        agency.care = await world.team("kettle", "care", lead="rosa", members=["rosa", "kai", "sam"])
        agency.north = await world.team("northwind", "north", members=["nils"])
        for account, platform in (("kettle-fb", "facebook"), ("kettle-ig", "instagram"), ("kettle-x", "x")):
            await world.account("kettle", agency.care, account_id=account, platform=platform)
        await world.account("northwind", agency.north, account_id="north-fb")
        await connect(world, "kettle-fb", external_id="page-1")
        await connect(world, "kettle-ig", external_id="ig-1")
        await connect(world, "north-fb", external_id="page-2")
        await world.grant("tina", "tenant_admin", "kettle")
        await world.grant("vera", "client_viewer", "kettle")
        for person in ("rosa", "kai", "sam", "nils", "tina", "vera"):
            agency.signed[person] = await world.session_for(person, created_at=T)
        agency.tokens["admin"] = await world.token_for("kettle", "tenant_admin", name="ops")
        yield agency


@pytest.fixture
def kept() -> KeptCommands:
    return KeptCommands()


@pytest.fixture
async def http(database_url: str, kept: KeptCommands) -> AsyncIterator[httpx.AsyncClient]:
    async with client(build_api(database_url, commands=kept, clock=Clock(T))) as http:
        yield http


def replies(conversation: str) -> str:
    return f"/api/conversations/{conversation}/replies"


def refused(response: httpx.Response, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["field"] == field, body
    return body


def text_of(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# -- sending ---------------------------------------------------------------------------------------


async def test_a_persons_reply_is_one_send_reply_with_their_id_and_their_sessions_sha(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    conversation, first = await agency.conversation(last=timedelta(hours=2))
    latest = await agency.world.interaction(conversation, text="Hello?", created_at=T - timedelta(minutes=5))
    await agency.world.interaction(conversation, direction="outbound", created_at=T - timedelta(minutes=1))

    response = await http.post(
        replies(conversation),
        json={"text": "It is back on Monday!", "command_id": "reply-kai-0001"},
        headers=agency.as_("kai"),
    )

    assert response.status_code == 202, response.text
    assert response.json() == {
        "command_id": "reply-kai-0001",
        "status": "pending",
        "outcome_url": "/api/commands/reply-kai-0001",
    }
    [command] = kept.sent
    assert isinstance(command, SendReply)
    assert command.person_id == "kai" and command.issued_by == "kai"
    assert command.session == ids.token_sha256(agency.signed["kai"].cookie)
    assert (command.tenant_id, command.conversation_id) == ("kettle", conversation)
    assert command.text == "It is back on Monday!"
    assert command.reply_to == latest != first  # the customer's latest message, not the brand's
    assert command.method is ReplyMethod.comment_reply
    assert command.command_id == "reply-kai-0001"
    assert subject_of(command) == subjects.outbound_command(
        tenant_id="kettle", conversation_id=conversation, verb="reply"
    )

    # answering an earlier message, named
    again = await http.post(
        replies(conversation),
        json={"text": "And this one too", "reply_to": first},
        headers=agency.as_("rosa"),
    )
    assert again.status_code == 202, again.text
    assert kept.sent[-1].reply_to == first and kept.sent[-1].person_id == "rosa"  # type: ignore[union-attr]
    assert kept.sent[-1].session == ids.token_sha256(agency.signed["rosa"].cookie)  # type: ignore[union-attr]


async def test_with_wait_the_answer_is_the_replys_outcome(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    conversation, _ = await agency.conversation()
    await agency.world.add(
        CommandOutcomeRow(
            command_id="reply-kai-0002",
            tenant_id="kettle",
            conversation_id=conversation,
            command_type="conversation.reply",
            issued_by="kai",
            outcome="applied",
            reason="sent on Facebook",
            at=T,
        )
    )
    response = await http.post(
        replies(conversation) + "?wait=1",
        json={"text": "Thanks!", "command_id": "reply-kai-0002"},
        headers=agency.as_("kai"),
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "applied" and response.json()["reason"] == "sent on Facebook"
    assert len(kept.sent) == 1


async def test_a_token_is_refused_a_reply_is_a_persons_and_nothing_is_sent(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    conversation, _ = await agency.conversation()
    response = await http.post(
        replies(conversation), json={"text": "Hi"}, headers=bearer(agency.tokens["admin"])
    )
    body = refused(response, 403, "auth")
    assert "a reply is written by a person" in body["error"]
    # a page of another site can send the cookie, not the CSRF token
    forged = await http.post(
        replies(conversation), json={"text": "Hi"}, headers=agency.signed["kai"].cookie_only
    )
    refused(forged, 403, "csrf")
    assert kept.sent == []


async def test_who_may_not_answer_the_conversation_sends_nothing(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    northwind, _ = await agency.conversation("north-fb", owner="nils")
    for person in ("kai", "tina", "rosa", "vera"):
        response = await http.post(replies(northwind), json={"text": "Hi"}, headers=agency.as_(person))
        assert response.status_code == 404, (person, response.text)
        assert (await http.get(replies(northwind), headers=agency.as_(person))).status_code == 404
    rosas, _ = await agency.conversation(owner="rosa")
    sees_only = await http.post(replies(rosas), json={"text": "Hi"}, headers=agency.as_("kai"))
    assert sees_only.status_code == 403, sees_only.text  # kai sees his team's, acts on his own
    nowhere = await http.post(replies("5eed" * 8), json={"text": "Hi"}, headers=agency.as_("kai"))
    assert nowhere.status_code == 404
    assert kept.sent == []


async def test_a_closed_messenger_window_is_refused_with_the_sentence_and_where_to_answer(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    closed, _ = await agency.conversation(kind="dm", last=timedelta(days=8))
    response = await http.post(
        replies(closed), json={"text": "Sorry for the wait"}, headers=agency.as_("kai")
    )
    body = refused(response, 409, "method")
    assert (
        body["error"]
        == "Messenger: the 7-day window closed on 24 Nov 2026, 10:00 UTC; answer in the Page inbox."
    )
    assert body["link"] == PAGE_URL
    assert kept.sent == []

    # within 7 days, a person answers as a human agent; the standard way is closed
    late, _ = await agency.conversation(kind="dm", last=timedelta(days=2))
    standard = await http.post(
        replies(late), json={"text": "Sorry!", "method": "send_api"}, headers=agency.as_("kai")
    )
    assert "is not possible now" in refused(standard, 409, "method")["error"]
    assert kept.sent == []
    agent = await http.post(replies(late), json={"text": "Sorry!"}, headers=agency.as_("kai"))
    assert agent.status_code == 202, agent.text
    [command] = kept.sent
    assert isinstance(command, SendReply) and command.method is ReplyMethod.human_agent


async def test_a_text_longer_than_the_platform_takes_is_refused_naming_the_limit(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    conversation, _ = await agency.conversation(kind="dm", last=timedelta(hours=1))
    messenger = await http.post(replies(conversation), json={"text": "é" * 2001}, headers=agency.as_("kai"))
    assert "at most 2,000 characters" in refused(messenger, 409, "text")["error"]
    longest = await http.post(replies(conversation), json={"text": "x" * 10_001}, headers=agency.as_("kai"))
    assert longest.status_code == 400, longest.text
    [problem] = longest.json()["problems"]
    assert problem["field"] == "text" and "10000" in problem["problem"]
    blank = await http.post(replies(conversation), json={"text": " \n "}, headers=agency.as_("kai"))
    assert refused(blank, 409, "text")["error"] == "Write something to send."
    control = await http.post(replies(conversation), json={"text": "hi\x07"}, headers=agency.as_("kai"))
    assert control.status_code == 400
    exact = await http.post(replies(conversation), json={"text": "é" * 2000}, headers=agency.as_("kai"))
    assert exact.status_code == 202, exact.text
    assert len(kept.sent) == 1


async def test_an_account_not_connected_or_failing_sends_nothing_and_says_where_to_answer(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    x, _ = await agency.conversation("kettle-x", kind="mention", url="https://x.com/dana/status/1")
    body = refused(await http.post(replies(x), json={"text": "Hi"}, headers=agency.as_("kai")), 409, "method")
    assert body["error"].startswith("Replies are not connected for this account; answer on X")
    assert body["link"] == "https://x.com/dana/status/1"
    await agency.world.add(
        ReplyTokenRow(
            account_id="kettle-fb",
            source_sha256=hashlib.sha256(SEALED.encode()).hexdigest(),
            credentials="sealed",
            failing="token expired",
        )
    )
    fb, _ = await agency.conversation()
    failing = refused(
        await http.post(replies(fb), json={"text": "Hi"}, headers=agency.as_("kai")), 409, "method"
    )
    assert failing["error"].startswith("The Facebook connection is failing: token expired")
    assert kept.sent == []


async def test_instagram_offers_one_private_reply_to_a_comment(
    agency: Agency, http: httpx.AsyncClient, kept: KeptCommands
) -> None:
    conversation, comment = await agency.conversation(
        "kettle-ig", last=timedelta(days=1), external_id="ig-c-1"
    )
    listed = (await http.get(replies(conversation), headers=agency.as_("kai"))).json()["verdict"]
    assert [way["method"] for way in listed["ways"]] == ["comment_reply", "private_reply"]
    assert [way["max_length"] for way in listed["ways"]] == [2200, 1000]
    private = await http.post(
        replies(conversation),
        json={"text": "Sent you a DM", "method": "private_reply"},
        headers=agency.as_("kai"),
    )
    assert private.status_code == 202, private.text
    await agency.world.add(
        reply_row(
            conversation, comment, "reply-dm", "private_reply", "sent", account="kettle-ig", target="ig-c-1"
        )
    )
    listed = (await http.get(replies(conversation), headers=agency.as_("kai"))).json()["verdict"]
    assert [way["method"] for way in listed["ways"]] == ["comment_reply"]
    again = await http.post(
        replies(conversation),
        json={"text": "Another DM", "method": "private_reply"},
        headers=agency.as_("kai"),
    )
    assert "already sent" in refused(again, 409, "method")["error"]
    assert len(kept.sent) == 1


# -- what became of them -------------------------------------------------------------------------------


def reply_row(
    conversation: str,
    reply_to: str,
    reply_id: str,
    method: str,
    state: str,
    *,
    account: str = "kettle-fb",
    person: str = "kai",
    minutes_ago: int = 10,
    **values: Any,
) -> ReplyRow:
    at = T - timedelta(minutes=minutes_ago)
    return ReplyRow(
        id=reply_id,
        tenant_id="kettle",
        conversation_id=conversation,
        account_id=account,
        platform="instagram" if account == "kettle-ig" else "facebook",
        person_id=person,
        text=values.pop("text", f"Reply {reply_id}"),
        reply_to=reply_to,
        target=values.pop("target", "c-1"),
        thread_id="thread-1",
        method=method,
        key=reply_id,
        state=state,
        attempts=1,
        requested_at=at,
        started_at=at,
        updated_at=at,
        **values,
    )


async def test_the_replies_are_listed_newest_last_with_the_rules_for_the_conversation_now(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    conversation, message = await agency.conversation()
    await agency.world.add(
        reply_row(
            conversation, message, "reply-sent", "comment_reply", "sent", minutes_ago=20,
            platform_id="c-1_r-1", url="https://www.facebook.com/kettle/posts/1?comment_id=r-1", sent_at=T - timedelta(minutes=19),
        ),
        reply_row(
            conversation, message, "reply-failed", "comment_reply", "failed", person="rosa", minutes_ago=15,
            error="(#368) The action attempted has been deemed abusive",
        ),
        reply_row(
            conversation, message, "reply-doubt", "comment_reply", "in_doubt", minutes_ago=5,
            error="Facebook did not answer in time", url="javascript:alert(1)",
        ),
        TimelineRow(
            id="reply:reply-failed:failed", seq=3, tenant_id="kettle", conversation_id=conversation, person_id="rosa",
            at=T - timedelta(minutes=14), kind="reply.changed", actor="rosa", summary="Reply failed",
            detail=json.dumps({"reply_id": "reply-failed", "retry": False}),
        ),
    )  # fmt: skip
    response = await http.get(replies(conversation), headers=agency.as_("rosa"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert [(r["id"], r["state"], r["person"]["name"]) for r in body["items"]] == [
        ("reply-sent", "sent", "Kai"),
        ("reply-failed", "failed", "Rosa"),
        ("reply-doubt", "in_doubt", "Kai"),
    ]
    sent, failed, doubt = body["items"]
    assert (
        sent["url"] == "https://www.facebook.com/kettle/posts/1?comment_id=r-1"
        and sent["platform_id"] == "c-1_r-1"
    )
    assert (
        failed["error"] == "(#368) The action attempted has been deemed abusive" and failed["retry"] is False
    )
    assert doubt["url"] is None  # only http and https links are given
    assert body["complete"] is True
    assert body["verdict"] == {
        "platform": "Facebook",
        "reply_to": message,
        "ways": [
            {"method": "comment_reply", "tag": None, "until": None, "label": "Facebook: a reply under the comment",
             "max_length": 8000},
        ],
        "reason": "Facebook: a reply goes under the comment, at any time.",
        "link": PAGE_URL,
        "max_length": 8000,
        "may_send": True,
    }  # fmt: skip
    # who sees it and may not answer it: the verdict says so
    for viewer in ({"headers": agency.as_("sam")}, {"headers": bearer(agency.tokens["admin"])}):
        seen = (await http.get(replies(conversation), **viewer)).json()
        assert seen["verdict"]["may_send"] is False and len(seen["items"]) == 3


async def test_the_verdict_counts_down_a_messenger_window(agency: Agency, http: httpx.AsyncClient) -> None:
    conversation, _ = await agency.conversation(kind="dm", last=timedelta(hours=20, minutes=48))
    verdict = (await http.get(replies(conversation), headers=agency.as_("kai"))).json()["verdict"]
    [way] = verdict["ways"]
    assert (way["method"], way["label"]) == ("send_api", "Messenger: 3 h 12 min left in the window")
    assert datetime.fromisoformat(way["until"]) == T + timedelta(hours=3, minutes=12)
    assert verdict["platform"] == "Messenger" and verdict["max_length"] == 2000


# -- the page ------------------------------------------------------------------------------------------


async def test_the_page_shows_the_reply_box_with_the_rules_before_typing(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    messenger, message = await agency.conversation(kind="dm", last=timedelta(hours=20, minutes=48))
    page = await http.get(f"/inbox/c/{messenger}", headers=agency.as_("kai"))
    assert page.status_code == 200, page.text
    words = text_of(page.text)
    assert "Messenger: 3 h 12 min left in the window" in words
    assert re.search(r'<form class="reply-form" data-reply data-conversation-id="' + messenger, page.text)
    assert f'name="reply_to" value="{message}"' in page.text
    assert 'name="method" value="send_api" data-max="2000"' in page.text
    assert '<label for="reply-text">Your reply on Messenger</label>' in page.text
    assert re.search(r'<textarea id="reply-text" name="text"[^>]*data-max="2000"', page.text)
    assert "0 of 2,000 characters" in words and ">Send</button>" in page.text
    assert "<script>" not in page.text and "style=" not in page.text  # the page's policy allows neither

    # several ways: a choice, labelled
    instagram, _ = await agency.conversation("kettle-ig", last=timedelta(days=1))
    page = await http.get(f"/inbox/c/{instagram}", headers=agency.as_("kai"))
    assert "<legend>Send as</legend>" in page.text
    assert 'type="radio" name="method" value="comment_reply" data-max="2200" checked' in page.text
    assert 'type="radio" name="method" value="private_reply" data-max="1000"' in page.text
    assert "Instagram: one private message to the author, 6 d left" in text_of(page.text)

    # no way: the reason and where to answer, no box
    closed, _ = await agency.conversation(kind="dm", last=timedelta(days=8))
    page = await http.get(f"/inbox/c/{closed}", headers=agency.as_("kai"))
    assert "data-reply " not in page.text and "<textarea" not in page.text
    assert (
        "Messenger: the 7-day window closed on 24 Nov 2026, 10:00 UTC; answer in the Page inbox."
        in text_of(page.text)
    )
    assert (
        f'<a href="{PAGE_URL}" rel="noopener noreferrer" target="_blank">Answer on Messenger</a>'
        in page.text.replace("&amp;", "&")
    )

    # who may read but not answer: the rules, no box
    page = await http.get(f"/inbox/c/{messenger}", headers=bearer(agency.tokens["admin"]))
    assert "Messenger: 3 h 12 min left in the window" in text_of(page.text) and "<textarea" not in page.text


async def test_the_thread_shows_each_reply_with_who_wrote_it_and_what_became_of_it(
    agency: Agency, http: httpx.AsyncClient
) -> None:
    conversation, message = await agency.conversation(last=timedelta(hours=1))
    echo = await agency.world.interaction(
        conversation, direction="outbound", external_id="c-1_r-1", text="Reply reply-sent",
        created_at=T - timedelta(minutes=19), sent_by="kai",
    )  # fmt: skip
    await agency.world.add(
        reply_row(conversation, message, "reply-sent", "comment_reply", "sent", minutes_ago=20, platform_id="c-1_r-1",
                  sent_at=T - timedelta(minutes=19)),
        reply_row(conversation, message, "reply-failed", "comment_reply", "failed", person="rosa", minutes_ago=15,
                  error="(#1) An unknown error occurred", text="Our café opens at 8"),
        reply_row(conversation, message, "reply-doubt", "comment_reply", "in_doubt", minutes_ago=5,
                  error="Facebook did not answer in time"),
        reply_row(conversation, message, "reply-sending", "comment_reply", "sending", minutes_ago=1),
    )  # fmt: skip
    page = await http.get(f"/inbox/c/{conversation}", headers=agency.as_("kai"))
    assert page.status_code == 200, page.text
    words = text_of(page.text)
    assert echo == ids.interaction_id(
        tenant_id="kettle", account_id="kettle-fb", external_id="c-1_r-1", edit_version=0
    )
    assert words.count("Reply reply-sent") == 1  # the sent reply once: as the platform's echo
    assert "Kai reply sent" in words
    assert "Rosa failed" in words and "Not sent: (#1) An unknown error occurred" in words
    assert '<button type="submit">Send again</button>' in page.text  # no word said it cannot be retried
    assert (
        'name="text" value="Our café opens at 8"' in page.text
        and 'name="method" value="comment_reply"' in page.text
    )
    assert "in doubt" in words and "In doubt: check on Facebook" in words
    assert "it is not sent again by itself (Facebook did not answer in time)" in words
    assert "sending…" in words
    order = [
        words.index(s)
        for s in ("Reply reply-sent", "Our café opens at 8", "Reply reply-doubt", "Reply reply-sending")
    ]
    assert order == sorted(order)


# -- fuzzed bodies ---------------------------------------------------------------------------------------

ANSWERED = ids.interaction_id(
    tenant_id="kettle", account_id="kettle-ig", external_id="c-fuzz", edit_version=0
)
DOCUMENTS = [
    {
        "text": "It is back on Monday!",
        "reply_to": ANSWERED,
        "method": "comment_reply",
        "command_id": "reply-0001",
    },
    {"text": "Sent you the details privately", "method": "private_reply"},
    {"text": "Thanks!"},
    {"text": "é" * 2201},  # longer than an Instagram comment takes
    {"text": "é" * 1001, "method": "private_reply"},  # longer than an Instagram DM takes
]


@dataclass
class Fuzzed:
    app: FastAPI
    kept: KeptCommands
    conversation: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Fuzzed:
    """One SQLite agency and one app for every case: kai signed in (cookie and CSRF token), an
    Instagram comment of his to answer (two ways: under it, or privately)."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('fuzz') / 'replies.db'}"

    async def build() -> tuple[str, dict[str, str]]:
        await asyncio.to_thread(upgrade, url)
        async with World(url) as world:
            await world.tenant("kettle")
            await world.person("kai")
            team = await world.team("kettle", "care", members=["kai"])
            await world.account("kettle", team, account_id="kettle-ig", platform="instagram")
            await connect(world, "kettle-ig", external_id="ig-1")
            conversation = await world.conversation(
                "kettle", "kettle-ig", team_id=team, owner_id="kai", platform="instagram", opened_at=T
            )
            answered = await world.interaction(
                conversation, created_at=T - timedelta(hours=1), external_id="c-fuzz"
            )
            assert answered == ANSWERED
            return conversation, (await world.session_for("kai", created_at=T)).headers

    conversation, headers = asyncio.run(build())
    kept = KeptCommands()
    return Fuzzed(build_api(url, commands=kept, clock=Clock(T)), kept, conversation, headers)


@properties(300)
@given(
    body=st.one_of(
        st.sampled_from(DOCUMENTS).flatmap(
            lambda document: mutated(
                document, *[method.value for method in ReplyMethod], ANSWERED, "é" * 1001, "é" * 2201, " "
            )
        ),
        raw_bodies(b'{"text": "hi"}'),
    ),
    wait=st.sampled_from(["", "0", "0.05", "-1", "11", "nan", "x"]),
)
def test_no_body_makes_a_reply_fail(fuzzed: Fuzzed, body: bytes, wait: str) -> None:
    fuzzed.kept.sent.clear()

    async def post() -> httpx.Response:
        async with client(fuzzed.app) as http:  # the app's connections end with each case's loop
            return await http.post(
                replies(fuzzed.conversation) + (f"?wait={wait}" if wait else ""),
                content=body,
                headers={**fuzzed.headers, "Content-Type": "application/json"},
            )

    response = asyncio.run(post())
    assert response.status_code in (200, 202, 400, 409), (response.status_code, response.text)
    assert isinstance(response.json().get("error"), str) or response.status_code in (200, 202)
    assert len(fuzzed.kept.sent) == (1 if response.status_code in (200, 202) else 0)
    for command in fuzzed.kept.sent:
        assert isinstance(command, SendReply) and command.person_id == "kai" and command.session
        assert command.reply_to == ANSWERED and command.method in (
            ReplyMethod.comment_reply,
            ReplyMethod.private_reply,
        )


# -- in a real browser -----------------------------------------------------------------------------------


@dataclass
class FakeOutbound(KeptCommands):
    """Takes each reply as the outbound service would when the platform took it at once: the reply
    recorded as sent, and its command applied."""

    sessions: Any = None

    async def send(self, command: Sendable) -> None:
        await super().send(command)
        assert isinstance(command, SendReply)
        async with transaction(self.sessions) as session:
            session.add_all(
                [
                    ReplyRow(
                        id=command.command_id, tenant_id=command.tenant_id, conversation_id=command.conversation_id,
                        account_id="kettle-fb", platform="facebook", person_id=command.person_id, text=command.text,
                        reply_to=command.reply_to or "", target="m-1", thread_id="t-1", method=str(command.method),
                        key=command.command_id, state="sent", attempts=1, platform_id=f"m_{command.command_id}",
                        url="https://www.facebook.com/kettle/inbox", requested_at=T, started_at=T, sent_at=T,
                        updated_at=T,
                    ),
                    CommandOutcomeRow(
                        command_id=command.command_id, tenant_id=command.tenant_id,
                        conversation_id=command.conversation_id, command_type=command.type,
                        issued_by=command.issued_by, outcome="applied", reason="sent on Messenger", at=T,
                    ),
                ]
            )  # fmt: skip


async def test_a_person_writes_and_sends_a_reply_in_a_real_browser(tmp_path: Path) -> None:
    """The reply box as a browser runs it, under the pages' policy: the count against Messenger's
    limit, the draft kept through a reload, Send, the reply in the thread; where the window is
    closed, the reason and the link; and axe-core finds nothing against WCAG 2.1 A and AA."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'browser.db'}"
    await asyncio.to_thread(upgrade, url)
    async with World(url) as world:
        agency = Agency(world)
        await world.tenant("kettle", name="Kettle Coffee")
        await world.person("kai", name="Kai Tanaka")
        agency.care = await world.team("kettle", "care", members=["kai"])
        await world.account("kettle", agency.care, account_id="kettle-fb")
        await world.account("kettle", agency.care, account_id="kettle-ig", platform="instagram")
        await connect(world, "kettle-fb", external_id="page-1")
        await connect(world, "kettle-ig", external_id="ig-1")
        open_window, _ = await agency.conversation(kind="dm", last=timedelta(hours=20, minutes=48))
        closed, _ = await agency.conversation(kind="dm", last=timedelta(days=8))
        instagram, message = await agency.conversation("kettle-ig", last=timedelta(hours=2))
        await world.add(
            reply_row(instagram, message, "reply-failed", "comment_reply", "failed", account="kettle-ig",
                      error="(#1) An unknown error occurred"),
            reply_row(instagram, message, "reply-doubt", "private_reply", "in_doubt", account="kettle-ig",
                      error="Instagram did not answer in time"),
        )  # fmt: skip
        kai = await world.session_for("kai", created_at=T)

    outbound = FakeOutbound()
    app = build_api(url, commands=outbound, clock=Clock(T))
    outbound.sessions = app.state.sessions
    port = free_port()
    server = _serve(app, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with playwright_browser() as browser:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            await context.add_cookies([{"name": "sh_session", "value": kai.cookie, "url": base}])
            page = await context.new_page()
            trouble: list[str] = []  # refused by the pages' policy, or thrown by their script
            page.on(  # (no live stream here, no favicon: what failed to load is not the page's fault)
                "console",
                lambda m: (
                    trouble.append(m.text)
                    if m.type == "error" and not m.text.startswith("Failed to load resource")
                    else None
                ),
            )
            page.on("pageerror", lambda error: trouble.append(f"uncaught: {error}"))

            await page.goto(f"{base}/inbox/c/{open_window}")
            await expect(page.locator("[data-verdict]")).to_have_text(
                "Messenger: 3 h 12 min left in the window"
            )
            box = page.get_by_label("Your reply on Messenger")
            count = page.locator("[data-reply-count]")
            send = page.get_by_role("button", name="Send", exact=True)
            await expect(count).to_have_text("0 of 2,000 characters")
            await expect(send).to_be_disabled()
            await box.fill("x" * 2001)
            await expect(count).to_have_text("2,001 of 2,000 characters: 1 too many")
            await expect(box).to_have_attribute("aria-invalid", "true")
            await expect(send).to_be_disabled()
            await box.fill("Back on Monday 😀")  # 16 characters, 17 UTF-16 units
            await expect(count).to_have_text("16 of 2,000 characters")
            if shots := os.environ.get("STAYHUMAN_SCREENSHOTS"):  # the README's picture of the reply box
                await page.screenshot(path=Path(shots) / "reply.png", full_page=True)
            await page.reload()  # the draft survives
            await expect(page.get_by_label("Your reply on Messenger")).to_have_value("Back on Monday 😀")
            await page.get_by_role("button", name="Send", exact=True).click()
            await expect(page.locator("[data-outcome]")).to_have_text(
                "Reply sent on Messenger.", timeout=10_000
            )
            await expect(page.get_by_label("Your reply on Messenger")).to_have_value("")
            thread = page.locator(".messages")
            await expect(thread).to_contain_text("Back on Monday 😀", timeout=5_000)
            await expect(thread.locator("[data-reply-state=sent]")).to_have_count(1)
            [command] = outbound.sent
            assert isinstance(command, SendReply)
            assert (command.person_id, command.text, command.method) == (
                "kai", "Back on Monday 😀", ReplyMethod.send_api,
            )  # fmt: skip
            assert command.session == ids.token_sha256(kai.cookie)
            assert command.command_id.startswith("reply-")

            await page.goto(f"{base}/inbox/c/{closed}")
            verdict = page.locator("[data-verdict]")
            await expect(verdict).to_contain_text("Messenger: the 7-day window closed on 24 Nov 2026")
            await expect(verdict.get_by_role("link", name="Answer on Messenger")).to_have_attribute(
                "href", PAGE_URL
            )
            await expect(page.locator("textarea")).to_have_count(0)

            # Instagram: two ways, each with its limit; a failed reply sent again the same way
            await page.goto(f"{base}/inbox/c/{instagram}")
            await page.get_by_role("radio", name=re.compile("private message")).check()
            await expect(page.locator("[data-reply-count]")).to_have_text("0 of 1,000 characters")
            await page.get_by_role("button", name="Send again").click()
            await expect(page.locator("[data-outcome]")).to_have_text(
                "Reply sent on Instagram.", timeout=10_000
            )
            again = outbound.sent[-1]
            assert isinstance(again, SendReply) and len(outbound.sent) == 2
            assert (again.text, again.method, again.reply_to) == (
                "Reply reply-failed", ReplyMethod.comment_reply, message,
            )  # fmt: skip
            assert again.command_id not in ("reply-failed", command.command_id)
            assert not trouble, trouble

            checking = await browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
            await checking.add_cookies([{"name": "sh_session", "value": kai.cookie, "url": base}])
            checker = await checking.new_page()
            problems = {}
            for conversation in (open_window, closed, instagram):
                await checker.goto(f"{base}/inbox/c/{conversation}")
                problems[conversation] = await accessibility_problems(checker)
            if shots:
                await checker.screenshot(path=Path(shots) / "reply-instagram.png", full_page=True)
            await expect(checker.get_by_role("radio", name=re.compile("private message"))).to_be_visible()
            await expect(checker.get_by_role("button", name="Send again")).to_be_visible()
            await expect(checker.locator(".messages")).to_contain_text("In doubt: check on Instagram")
            assert not any(problems.values()), problems
    finally:
        server.should_exit = True
        await close_api(app)

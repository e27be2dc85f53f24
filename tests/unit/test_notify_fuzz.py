"""notify's public endpoints answer every input clearly: fuzzed in process through the ASGI app,
with valid links so the parsers are reached (and damaged, forged, expired ones). The push
registration gets valid subscriptions mutated field by field and hostile corpora (huge strings,
NUL, lone surrogates, bytes that are not UTF-8, deep nesting, 4,300+ digit numbers); the
acknowledge pages get signed tokens carrying hostile contents. Never a 5xx, never a hang, and
on the JSON endpoint every error is a JSON body naming it.

The acknowledge button goes through what it goes through in notify: the `Acknowledge` command
applied by the service, here over the in-memory repository (one conversation waits at deadline
version 3; the rest are unknown), its events kept instead of published. A tiny in-memory store
of people and subscriptions stands in for the database of the push registration. The cases per
test come from STAYHUMAN_FUZZ_EXAMPLES (10,000 unless set; `make test-unit` runs fewer)."""

import asyncio
import json
import time
from typing import Any, cast
from urllib.parse import quote

import httpx
from fastapi import FastAPI
from hypothesis import example, given
from hypothesis import strategies as st
from nats.js import JetStreamContext
from py_vapid import Vapid

from services.notify.acks import ack_token, acks_router
from services.notify.consumers import CommandAcknowledger, Publisher
from services.notify.memory import MemoryRepository
from services.notify.ports import NotifyRepository
from services.notify.push import LINK_MAX_AGE, Registered, Registration, push_router
from services.notify.service import Outcome
from shared.runtime import install_error_handlers
from shared.secrets import LinkSigner, new_key
from tests.fuzz import FUZZ, encode, mutated, raw_bodies
from tests.notify_world import T0, World, context, deadline
from tests.push import Device

ANSWER_WITHIN = 10.0  # seconds: anything slower is a hang

SIGNER = LinkSigner(new_key())
CONVERSATION = "c" * 32


class MemoryPushStore:
    """The push store port: maria and li exist, maria's links are of generation 2."""

    def __init__(self) -> None:
        self.generations = {"maria": 2, "li": 0}
        self.owners: dict[str, str] = {}

    async def generation(self, person_id: str) -> int | None:
        return self.generations.get(person_id)

    async def register(self, registration: Registration) -> Registered:
        if registration.person_id not in self.generations:
            return "unknown_person"
        if registration.generation != self.generations[registration.person_id]:
            return "revoked"
        owner = self.owners.setdefault(registration.endpoint, registration.person_id)
        return "taken" if owner != registration.person_id else "registered"


class KeptPublisher(Publisher):
    """Keeps what the service's outcome says to publish instead of publishing it."""

    def __init__(self, repository: NotifyRepository) -> None:
        super().__init__(cast(JetStreamContext, None), repository)
        self.outcomes: list[Outcome] = []

    async def publish(self, outcome: Outcome, *, stream: str, consumer: str) -> None:
        self.outcomes.append(outcome)


async def resolve(host: str, _port: int) -> list[str]:
    answers = {"push.example": ["93.184.216.34"], "inside.example": ["10.0.0.1"]}
    if host not in answers:
        raise OSError("no such host")
    return answers[host]


class Client:
    """One event loop and one ASGI client for many requests (hypothesis runs examples one by one)."""

    def __init__(self) -> None:
        vapid = Vapid()
        vapid.generate_keys()
        self.loop = asyncio.new_event_loop()
        self.notify = World(MemoryRepository(conversations={CONVERSATION: context(CONVERSATION)}))
        self.loop.run_until_complete(self.notify.service.deadlines_changed([deadline(CONVERSATION, 3, T0)]))
        self.published = KeptPublisher(self.notify.repository)
        acknowledger = CommandAcknowledger(lambda: (self.notify.service, self.published))
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(push_router(signer=SIGNER, vapid=vapid, store=MemoryPushStore(), resolve=resolve))
        app.include_router(acks_router(signer=SIGNER, acknowledger=acknowledger))
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://notify.test")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        started = time.monotonic()
        answer = self.loop.run_until_complete(
            asyncio.wait_for(self.http.request(method, url, **kwargs), ANSWER_WITHIN)
        )
        assert time.monotonic() - started < ANSWER_WITHIN
        return answer

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


CLIENT = Client()


def teardown_module() -> None:
    CLIENT.close()


# Hostile material: the shared corpora, with what this endpoint knows (its URLs and keys).

long_strings = st.sampled_from([("x", 1025), ("A", 5000), ("9", 4301), ("é", 3000)]).map(
    lambda c: c[0] * c[1]
)
PUSH_STRINGS = [
    "https://push.example/\x00",
    "https://push.example:0/",
    "https://push.example:65536/",
    "https://[::1]/",
    "https://[::1/",
    "https://inside.example/",
    "http://push.example/",
    "javascript:alert(1)",
    "https://push.example/" + "é" * 20,
    "https://push.example@inside.example/",
    "https://%70ush.example/",
    "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
    "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkN",
    "tBHItJI5svbpez7KI4CCXg",
    "tBHItJI5svbpez7KI4CCXg==",
    "tBHItJI5svbpez7KI4CC",
    "====",
    "+/+/+/+/+/+/+/+/+/+/+w",
]
hostile_strings = st.one_of(
    st.text(max_size=60), long_strings, st.sampled_from([*PUSH_STRINGS, "", "\x00", "\ud800"])
)
push_bodies = raw_bodies(
    b'{"endpoint": "\xff\xfe"}', b'{"endpoint": ' + b"9" * 4000 + b"}", b'{"endpoint": "\\u0000"}'
)


def subscription(endpoint: str = "https://push.example/send/abc") -> dict[str, Any]:
    return Device().subscription(endpoint)


SUBSCRIPTIONS = [
    subscription(),
    subscription("https://push.example/send/other"),
    subscription("https://inside.example/x"),
]

now = int(time.time())
PUSH_LINKS = [
    "/push/" + SIGNER.issue("push", "2:maria"),  # valid
    "/push/" + SIGNER.issue("push", "0:li"),  # valid
    "/push/" + SIGNER.issue("push", "1:maria"),  # revoked
    "/push/" + SIGNER.issue("push", "0:ghost"),  # nobody
    "/push/" + SIGNER.issue("push", "2:maria", at=now - LINK_MAX_AGE - 10),  # too old
    "/push/" + SIGNER.issue("ack", f"{CONVERSATION}:1:maria"),  # another purpose
    "/push/" + LinkSigner(new_key()).issue("push", "2:maria"),  # another installation
    "/push/x",
]
tokens = st.one_of(
    st.sampled_from(PUSH_LINKS[:2]),  # mostly the parser behind a valid link
    st.sampled_from(PUSH_LINKS),
    st.text(max_size=80).map(lambda t: "/push/" + quote(t, safe="")),
    long_strings.map(lambda t: "/push/" + quote(t, safe="")),
    st.sampled_from(["/push/%00", "/push/%FF%FE", "/push/..%2F..%2Fetc"]),
)
bodies = st.one_of(
    st.sampled_from(SUBSCRIPTIONS).flatmap(lambda document: mutated(document, *PUSH_STRINGS)),
    st.sampled_from(SUBSCRIPTIONS).map(encode),
    push_bodies,
    st.just(5_000_000).map(lambda n: b'{"endpoint": "' + b"A" * n + b'"}'),  # read no further than the limit
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "",
        "application/json; charset=latin-1",
    ]
)

JSON_ERRORS = {400, 404, 405, 409, 410, 413, 415, 422}


def assert_clear_json(answer: httpx.Response) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    if answer.status_code >= 400:
        assert answer.status_code in JSON_ERRORS, answer.status_code
        body = answer.json()
        assert isinstance(body, dict) and body.get("error"), body
    else:
        assert answer.status_code in (200, 201) and answer.json()["registered"] is True


@FUZZ
@given(link=tokens, body=bodies, content_type=content_types)
@example(link=PUSH_LINKS[0], body=encode(subscription()), content_type="application/json")
@example(link=PUSH_LINKS[0], body=b"{" * 100_000, content_type="application/json")
@example(link=PUSH_LINKS[0], body=b'{"a": ' + b"1" * 4301 + b"}", content_type="application/json")
def test_push_registration_answers_every_body_clearly(link: str, body: bytes, content_type: str) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = CLIENT.request("POST", f"{link}/subscriptions", content=body, headers=headers)
    assert_clear_json(answer)


ack_contents = st.one_of(
    st.builds(
        lambda c, v, w: f"{c}:{v}:{w}",
        st.sampled_from([CONVERSATION, "d" * 32, "C" * 32, "c" * 31, ""]),
        st.one_of(
            st.integers(min_value=0, max_value=2**70).map(str),
            st.just(4301).map(lambda n: "1" * n),
            st.sampled_from(["-1", "\u00b2", "\u0661", "1_000", " 1", "0x10", ""]),
        ),
        st.sampled_from(["maria", "team", "", "MARIA", "a" * 64, "x\x00y", "../../"]),
    ),
    hostile_strings,
    st.text(max_size=200),
).filter(lambda text: not any("\ud800" <= c <= "\udfff" for c in text))  # a token carries UTF-8
ack_tokens = st.one_of(
    ack_contents.map(lambda text: SIGNER.issue("ack", text)),  # ours: the parser is reached
    st.just(ack_token(SIGNER, conversation_id=CONVERSATION, version=3, who="maria")),
    ack_contents.map(lambda text: LinkSigner(new_key()).issue("ack", text)),
    st.just(SIGNER.issue("ack", f"{CONVERSATION}:3:maria", at=now - 15 * 24 * 3600)),
    st.just(SIGNER.issue("push", "2:maria")),
    st.text(max_size=120),
    st.sampled_from(["%00", "..", "é"]),
    long_strings,
)

# What a client may put in a path as it is; the rest it percent-encodes.
UNRESERVED = "/:@!$&'()*+,;=-._~"


def assert_clear_page(answer: httpx.Response) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.text[:300])
    if answer.is_redirect:  # a trailing slash: the framework points at the path without it
        return
    if answer.headers.get("content-type", "").startswith("application/json"):
        assert answer.status_code in (404, 405) and answer.json().get("error")  # no route: not ours
    else:
        assert answer.headers["content-type"].startswith("text/html")
        assert answer.status_code in (200, 404, 410)


@FUZZ
@given(token=ack_tokens, quoted=st.booleans())
def test_the_acknowledge_page_answers_every_link_clearly(token: str, quoted: bool) -> None:
    answer = CLIENT.request("GET", "/ack/" + quote(token, safe="" if quoted else UNRESERVED))
    assert_clear_page(answer)


@FUZZ
@given(token=ack_tokens, quoted=st.booleans(), body=push_bodies, content_type=content_types)
@example(token=ack_token(SIGNER, conversation_id=CONVERSATION, version=3, who="maria"), quoted=True,
         body=b"", content_type="")  # fmt: skip
def test_acknowledging_answers_every_link_and_body_clearly(
    token: str, quoted: bool, body: bytes, content_type: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    before = len(CLIENT.published.outcomes)
    answer = CLIENT.request(
        "POST", "/ack/" + quote(token, safe="" if quoted else UNRESERVED), content=body, headers=headers
    )
    assert_clear_page(answer)
    if answer.status_code == 200:
        assert "Acknowledged" in answer.text
        # the command's outcome: applied the first time, already done after
        [outcome] = CLIENT.published.outcomes[before:]
        reply = json.loads(outcome.replies[-1].payload)
        assert reply["conversation_id"] == CONVERSATION
        assert reply["type"] == "command.applied" or reply["code"] == "already_done"

"""Every input to ingest's endpoints gets a clear answer: fuzzed in process through the ASGI app,
signed so the parsers are reached. Never a 5xx; what is accepted is storable; every entry of an
accepted delivery is stored or kept on the dead letter."""

import base64
import copy
import hashlib
import hmac
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.fuzz import FUZZ, mutated, raw_bodies
from tests.helpers import generic_body, sign
from tests.ingest_fakes import (
    GENERIC_SECRET,
    META_SECRET,
    TOKEN,
    X_SECRET,
    Client,
    KeepingPublisher,
    assert_clear_answer,
    assert_storable,
    ingest_app,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "platforms"
SIGNED: dict[str, Any] = json.loads((FIXTURES / "signed_requests.json").read_text())


def _document(name: str) -> Any:
    return json.loads(SIGNED[name]["body"])


META_DOCUMENTS = [
    _document(n)
    for n in ("meta_page_comment", "meta_messenger_message", "instagram_comment", "meta_messenger_echo")
]
X_DOCUMENTS = [_document(n) for n in ("x_mention", "x_dm", "x_dm_own_reply")]
GENERIC_DOCUMENT = json.loads(
    generic_body("fuzz-1", thread_id="fuzz-thread", created_at=datetime(2026, 11, 30, tzinfo=UTC))
)
BATCH_DOCUMENT = {
    "interactions": [
        {**GENERIC_DOCUMENT, "account_id": "acme-fb"},
        {**GENERIC_DOCUMENT, "external_id": "fuzz-2", "account_id": "acme-fb"},
    ]
}


@pytest.fixture(scope="module")
def publisher() -> KeepingPublisher:
    return KeepingPublisher()


@pytest.fixture(scope="module")
def client(publisher: KeepingPublisher) -> Iterator[Client]:
    app = ingest_app(publisher)
    running = Client(app)
    yield running
    running.close()


def _meta_headers(body: bytes) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256=" + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
    }


def _x_headers(body: bytes) -> dict[str, str]:
    digest = hmac.new(X_SECRET.encode(), body, hashlib.sha256).digest()
    return {"x-twitter-webhooks-signature": "sha256=" + base64.b64encode(digest).decode()}


def _check_delivery(publisher: KeepingPublisher, before: tuple[int, int], response: Any) -> None:
    """A platform's 200 accounts for every entry: stored, ignored, or on the dead letter."""
    assert_clear_answer(response)
    events, rejected = len(publisher.events) - before[0], len(publisher.rejected) - before[1]
    if response.status_code == 200:
        answer = response.json()
        assert answer["accepted"] == events
        assert len(answer["rejected"]) == rejected
        for event in publisher.events[before[0] :]:
            assert_storable(event)
    else:
        assert response.status_code in (400, 413) and (events, rejected) == (0, 0)


@FUZZ
@given(body=st.one_of(mutated(GENERIC_DOCUMENT), raw_bodies()))
@example(body=json.dumps({**GENERIC_DOCUMENT, "edit_version": 2**63}).encode())
@example(body=json.dumps({**GENERIC_DOCUMENT, "text": "a\x00b"}).encode())
@example(body=json.dumps({**GENERIC_DOCUMENT, "created_at": "9999-12-31T23:59:59Z"}).encode())
@example(body=json.dumps({**GENERIC_DOCUMENT, "external_id": "\ud800"}).encode())
def test_the_generic_webhook_answers_everything_clearly(
    client: Client, publisher: KeepingPublisher, body: bytes
) -> None:
    before = len(publisher.events)
    response = client.request(
        "POST",
        "/webhooks/generic/acme-fb",
        content=body,
        headers={"X-Signature-256": sign(GENERIC_SECRET, body)},
    )
    assert_clear_answer(response)
    assert response.status_code in (202, 400, 413), response.text
    if response.status_code == 202:
        assert len(publisher.events) == before + 1
        assert_storable(publisher.events[-1])
    else:
        assert len(publisher.events) == before


@FUZZ
@given(body=st.one_of(*(mutated(d) for d in META_DOCUMENTS), raw_bodies()))
def test_meta_deliveries_are_stored_or_dead_lettered_entry_by_entry(
    client: Client, publisher: KeepingPublisher, body: bytes
) -> None:
    before = (len(publisher.events), len(publisher.rejected))
    response = client.request("POST", "/webhooks/meta", content=body, headers=_meta_headers(body))
    _check_delivery(publisher, before, response)


@FUZZ
@given(body=st.one_of(*(mutated(d) for d in X_DOCUMENTS), raw_bodies()))
def test_x_deliveries_are_stored_or_dead_lettered_entry_by_entry(
    client: Client, publisher: KeepingPublisher, body: bytes
) -> None:
    before = (len(publisher.events), len(publisher.rejected))
    response = client.request("POST", "/webhooks/x", content=body, headers=_x_headers(body))
    _check_delivery(publisher, before, response)


@FUZZ
@given(body=st.one_of(mutated(BATCH_DOCUMENT), raw_bodies()))
def test_the_batch_api_answers_everything_clearly(
    client: Client, publisher: KeepingPublisher, body: bytes
) -> None:
    before = len(publisher.events)
    response = client.request(
        "POST", "/v1/interactions", content=body, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert_clear_answer(response)
    assert response.status_code in (202, 400, 404, 413), response.text
    if response.status_code == 202:
        stored = publisher.events[before:]
        assert len(stored) == response.json()["accepted"]
        for event in stored:
            assert_storable(event)
    else:
        assert len(publisher.events) == before


@FUZZ
@given(
    token=st.one_of(
        st.text(max_size=300), st.sampled_from(['{"for_user_id":"1"}', "c0ffee00-1111-2222", "A" * 257])
    ),
    header=st.one_of(st.none(), st.text(max_size=80)),
)
def test_handshakes_and_headers_answer_everything_clearly(
    client: Client, token: str, header: str | None
) -> None:
    crc = client.request("GET", "/webhooks/x", params={"crc_token": token})
    assert_clear_answer(crc)
    if crc.status_code == 200:
        assert "{" not in token and '"' not in token  # a delivery is never signed
    challenge = client.request(
        "GET",
        "/webhooks/meta",
        params={"hub.mode": "subscribe", "hub.verify_token": "verify-token", "hub.challenge": token},
    )
    assert challenge.status_code in (200, 403)
    if challenge.status_code == 200:
        assert challenge.text == token and re.fullmatch(r"[A-Za-z0-9_-]{1,128}", token) is not None
    # any byte a client can put in a header (non-ASCII included), but line breaks and NUL
    value = None if header is None else re.sub(rb"[\r\n\x00]", b"", header.encode("utf-8"))
    headers = (
        {}
        if value is None
        else {"X-Signature-256": value, "X-Hub-Signature-256": value, "x-twitter-webhooks-signature": value}
    )
    for url in ("/webhooks/generic/acme-fb", "/webhooks/meta", "/webhooks/x"):
        response = client.request("POST", url, content=b'{"x": 1}', headers=headers)
        assert_clear_answer(response)
        assert response.status_code == 401


def test_an_unknown_account_and_a_bad_signature_get_the_same_answer(client: Client) -> None:
    body = generic_body("m-1")
    bad = client.request(
        "POST",
        "/webhooks/generic/acme-fb",
        content=body,
        headers={"X-Signature-256": sign("wrong-secret-xxxxxxxx", body)},
    )
    unknown = client.request(
        "POST",
        "/webhooks/generic/nobody",
        content=body,
        headers={"X-Signature-256": sign(GENERIC_SECRET, body)},
    )
    no_secret = client.request(
        "POST",
        "/webhooks/generic/acme-nosecret",
        content=body,
        headers={"X-Signature-256": sign(GENERIC_SECRET, body)},
    )
    huge_id = client.request(
        "POST",
        "/webhooks/generic/" + "a" * 60_000,
        content=body,
        headers={"X-Signature-256": sign(GENERIC_SECRET, body)},
    )
    assert (
        (bad.status_code, bad.json())
        == (unknown.status_code, unknown.json())
        == (no_secret.status_code, no_secret.json())
    )
    assert bad.status_code == 401 and bad.json() == {"error": "bad signature in X-Signature-256"}
    assert huge_id.status_code in (401, 404) and huge_id.json()["error"]


def test_a_delivery_whose_interaction_exceeds_the_server_limit_keeps_it_on_the_dead_letter() -> None:
    publisher = KeepingPublisher(max_payload=2000)
    client = Client(ingest_app(publisher))
    try:
        document = copy.deepcopy(X_DOCUMENTS[0])
        document["tweet_create_events"][0]["text"] = "long " * 1000
        body = json.dumps(document).encode()
        response = client.request("POST", "/webhooks/x", content=body, headers=_x_headers(body))
        single = generic_body("big-1", text="long " * 1000)
        big = client.request(
            "POST",
            "/webhooks/generic/acme-fb",
            content=single,
            headers={"X-Signature-256": sign(GENERIC_SECRET, single)},
        )
        item = {**json.loads(generic_body("big-2", text="long " * 1000)), "account_id": "acme-fb"}
        small = {**json.loads(generic_body("small-1")), "account_id": "acme-fb"}
        batch = client.request(
            "POST",
            "/v1/interactions",
            json={"interactions": [small, item]},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    finally:
        client.close()
    assert response.status_code == 200 and response.json()["accepted"] == 0
    assert [r["where"] for r in response.json()["rejected"]] == ["interaction[0]"]
    assert big.status_code == 413 and big.json()["error"]
    # the batch API is all or nothing: the item named, nothing of the batch stored
    assert batch.status_code == 413 and batch.json()["error"].startswith("interactions[1]: ")
    assert not any(e.external_id == "small-1" for e in publisher.events)


def test_unknown_accounts_cost_no_database_query_each() -> None:
    """The accounts are held in memory: a thousand requests for accounts that do not exist read
    the table once, as one request for an account that does."""
    app = ingest_app(KeepingPublisher())
    client = Client(app)
    try:
        body = generic_body("m-1")
        answers = {
            client.request(
                "POST",
                f"/webhooks/generic/nobody-{n}",
                content=body,
                headers={"X-Signature-256": sign(GENERIC_SECRET, body)},
            ).status_code
            for n in range(1000)
        }
    finally:
        client.close()
    assert answers == {401} and app.state.accounts.loads == 1

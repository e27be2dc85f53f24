"""Sign-in's edges in process: the security headers every answer carries, links and CSV cells
made safe, the CSRF check, and sign-in and set-password bodies fuzzed over a SQLite file
(never a 5xx; every error a JSON body naming the problem). The flows themselves, on each
database, are tests/integration/test_api_tokens_and_roles.py."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from hypothesis import example, given
from hypothesis import strategies as st

from services.api.auth import Principal, check_csrf
from services.api.security import API_CSP, csv_cell, install_security_headers, safe_url
from shared.db.migrate import upgrade
from shared.runtime import install_error_handlers
from tests.api_world import BASE_URL, World, api_settings, build_api
from tests.fuzz import mutated, properties, raw_bodies

PASSWORD = "correct horse battery staple"

# -- links from platforms -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://www.facebook.com/kettle/posts/123?comment_id=9",
        "http://example.com",
        "HTTPS://EXAMPLE.COM/a#b",
        "https://[2001:db8::1]:8443/path",
    ],
)
def test_http_links_are_kept_as_they_are(url: str) -> None:
    assert safe_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "file:///etc/passwd",
        "/relative/path",
        "//evil.example/x",
        "https://",
        "https:///path",
        "https:\\\\evil.example",
        "https://exa mple.com",
        "https://example.com/\x00",
        " https://example.com",
        "https://example.com:port/",
        "https://[::1",
        "",
        "x" * 3000,
        None,
        42,
    ],
)
def test_anything_but_an_http_link_is_dropped(url: Any) -> None:
    assert safe_url(url) is None


@properties(500)
@given(st.one_of(st.text(), st.from_regex(r"\A(https?|javascript|data):.{0,40}\Z")))
def test_a_kept_link_is_always_http_or_https(url: str) -> None:
    kept = safe_url(url)
    assert kept is None or (kept == url and kept.lower().startswith(("http://", "https://")))


# -- CSV cells --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ('=HYPERLINK("http://evil","x")', '\'=HYPERLINK("http://evil","x")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("\uff1d1+1", "'\uff1d1+1"),
        ("Is the oat latte back?", "Is the oat latte back?"),
        ("a=b", "a=b"),
        ("", ""),
    ],
)
def test_a_cell_that_would_be_a_formula_is_text(value: str, cell: str) -> None:
    assert csv_cell(value) == cell


@properties(500)
@given(st.text())
def test_no_cell_starts_a_formula(value: str) -> None:
    cell = csv_cell(value)
    assert cell in (value, "'" + value)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))


# -- security headers ---------------------------------------------------------------------------


async def test_every_answer_carries_the_security_headers_and_a_page_may_widen_its_policy() -> None:
    app = FastAPI()
    install_error_handlers(app)
    install_security_headers(app)

    @app.get("/api/thing")
    async def thing() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/api/refused")
    async def refused() -> dict[str, str]:
        raise HTTPException(403, {"error": "no", "field": "x"})

    @app.get("/inbox")
    async def page() -> HTMLResponse:
        return HTMLResponse(
            "<p>inbox</p>",
            headers={"Content-Security-Policy": "default-src 'self'", "Cache-Control": "private, max-age=60"},
        )

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL) as http:
        answers = {
            path: await http.get(path) for path in ("/api/thing", "/api/refused", "/api/nothing", "/inbox")
        }
    for path, answer in answers.items():
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["referrer-policy"] == "no-referrer", path
        assert answer.headers["x-frame-options"] == "DENY", path
    for path in ("/api/thing", "/api/refused", "/api/nothing"):
        assert answers[path].headers["content-security-policy"] == API_CSP
        assert answers[path].headers["cache-control"] == "no-store"
    assert "default-src 'none'" in API_CSP and "frame-ancestors 'none'" in API_CSP
    assert answers["/inbox"].headers.get_list("content-security-policy") == ["default-src 'self'"]
    assert answers["/inbox"].headers.get_list("cache-control") == ["private, max-age=60"]


# -- CSRF ---------------------------------------------------------------------------------------


def request(method: str, headers: dict[str, str]) -> Request:
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    return Request({"type": "http", "method": method, "path": "/api/x", "headers": raw, "query_string": b""})


SESSION = Principal(person_id="kai", session_id="s" * 64, csrf_token="the-csrf-token")
TOKEN = Principal(person_id=None, token_id="t1", token_name="ci", tenant_id="kettle", role="tenant_admin")


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("sent", [None, "", "wrong", "the-csrf-token ", "THE-CSRF-TOKEN", "\xe9"])
def test_a_write_with_a_session_needs_its_csrf_token(method: str, sent: str | None) -> None:
    headers = {} if sent is None else {"X-CSRF-Token": sent}
    with pytest.raises(HTTPException) as refused:
        check_csrf(request(method, headers), SESSION)
    assert refused.value.status_code == 403
    detail: dict[str, str] = refused.value.detail  # type: ignore[assignment]  # ours is a dict
    assert detail["field"] == "csrf"
    assert "CSRF token missing or wrong" in detail["error"]
    check_csrf(request(method, {"X-CSRF-Token": "the-csrf-token"}), SESSION)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_a_read_needs_no_csrf_token(method: str) -> None:
    check_csrf(request(method, {}), SESSION)


def test_a_token_needs_no_csrf_token() -> None:
    check_csrf(request("DELETE", {}), TOKEN)


# -- fuzzed bodies ------------------------------------------------------------------------------


class Client:
    """One event loop and one ASGI client for many requests (hypothesis runs examples one by one)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)

    def post(self, path: str, body: bytes) -> httpx.Response:
        return self.loop.run_until_complete(
            self.http.post(path, content=body, headers={"Content-Type": "application/json"})
        )

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.run_until_complete(self.app.state.engine.dispose())
        self.loop.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('api')) / 'stayhuman.db'}"
    upgrade(url)

    async def seed() -> None:
        async with World(url) as world:
            await world.tenant("kettle")
            await world.person("kai", password=PASSWORD)

    # No lockout while fuzzing, so every body that validates reaches the password check.
    settings = api_settings(url, login_max_failures=10**9, login_max_per_address=10**9)
    running = Client(build_api(url, settings))
    running.loop.run_until_complete(seed())
    yield running
    running.close()


def assert_clear_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and body.get("error"), body


SIGN_IN = {"email": "kai@example.com", "password": PASSWORD}
SET_PASSWORD = {"token": "A" * 43, "password": "a new and longer passphrase"}


@properties(150)
@given(body=st.one_of(mutated(SIGN_IN, "kai@example.com", PASSWORD), raw_bodies()))
@example(body=json.dumps({"email": "kai@example.com\x00", "password": PASSWORD}).encode())
@example(body=json.dumps({"email": "\ud800@example.com", "password": PASSWORD}).encode())
@example(body=json.dumps({"email": "kai@example.com", "password": "\ud800" * 20}).encode())
@example(body=json.dumps({"email": "\u0130" * 320, "password": PASSWORD}).encode())
@example(body=json.dumps({"email": "kai@example.com", "password": "x" * 100_000}).encode())
@example(body=json.dumps(SIGN_IN).encode())
def test_sign_in_answers_every_body_clearly(api: Client, body: bytes) -> None:
    response = api.post("/api/session", body)
    assert_clear_answer(response)
    if response.status_code == 200:
        assert response.json()["person_id"] == "kai"
        assert response.cookies.get("sh_session")
    else:
        assert "set-cookie" not in response.headers


@properties(600)
@given(body=st.one_of(mutated(SET_PASSWORD), raw_bodies()))
@example(body=json.dumps({"token": "A" * 43 + "\x00", "password": "a new and longer passphrase"}).encode())
@example(body=json.dumps({"token": "\ud800" * 43, "password": "a new and longer passphrase"}).encode())
@example(body=json.dumps({"token": "A" * 43, "password": "\ud800" * 20}).encode())
def test_setting_a_password_answers_every_body_clearly(api: Client, body: bytes) -> None:
    response = api.post("/api/password", body)
    assert_clear_answer(response)
    assert response.status_code != 200  # no link was made: nothing can set a password

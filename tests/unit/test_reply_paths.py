"""No code path posts a reply without a person's id and an action from their signed-in session.

Read from the source, so that a new path cannot slip in unseen:
- only the inbox's reply route builds a `SendReply`, and it takes the person and the session
  from the signed-in viewer (a token has no session: the route refuses it before building one);
- only the outbound service's `clients.py` and `service.py` reach the platform clients, and the
  only call that posts (`client.post(...)`) is in `Outbound._send`;
- `Outbound._send` is reached only from `Outbound.handle`, after `_check` (which refuses a command
  whose session is not live and that person's) recorded the reply, or for a reply recorded so.
The behaviour behind each point is tested in tests/integration/test_api_replies.py and
tests/integration/test_outbound_service.py."""

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("services", "shared", "stayhuman")


def _sources() -> Iterator[tuple[Path, ast.Module]]:
    for part in PRODUCT:
        for path in sorted((ROOT / part).rglob("*.py")):
            yield path.relative_to(ROOT), ast.parse(path.read_text(), filename=str(path))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if called == name:
                found.append(node)
    return found


def _function(tree: ast.Module, cls: str, name: str) -> ast.AsyncFunctionDef:
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.AsyncFunctionDef) and item.name == name:
                    return item
    raise AssertionError(f"{cls}.{name} is not there")


def test_only_the_inbox_reply_route_builds_a_reply_command_from_the_signed_in_person() -> None:
    builders = {str(path) for path, tree in _sources() if _calls(tree, "SendReply")}
    assert builders == {"services/api/replies.py"}
    tree = ast.parse((ROOT / "services/api/replies.py").read_text())
    [call] = _calls(tree, "SendReply")
    keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
    assert "session" in keywords and "person_id" in keywords
    assert "session_sha256" in ast.unparse(tree), "the session comes from the signed-in viewer"


def test_only_outbound_reaches_the_platform_clients_and_only_send_posts() -> None:
    importers = set()
    for path, tree in _sources():
        if str(path).startswith("services/outbound/platforms/"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "services.outbound.platforms"
            ):
                importers.add(str(path))
    assert importers <= {
        "services/outbound/clients.py",
        "services/outbound/service.py",
        "services/outbound/ports.py",
    }, importers
    service = ast.parse((ROOT / "services/outbound/service.py").read_text())
    posting = [
        call
        for call in _calls(service, "post")
        if isinstance(call.func, ast.Attribute) and ast.unparse(call.func.value) == "client"
    ]
    assert len(posting) == 1
    send = _function(service, "Outbound", "_send")
    assert posting[0] in list(ast.walk(send))


def test_send_is_reached_only_after_the_session_check_recorded_the_reply() -> None:
    service = ast.parse((ROOT / "services/outbound/service.py").read_text())
    callers = [
        node.name
        for node in ast.walk(service)
        if isinstance(node, ast.AsyncFunctionDef) and _calls(node, "_send")
    ]
    assert callers == ["handle"]
    handle = _function(service, "Outbound", "handle")
    order = [ast.unparse(call.func) for call in ast.walk(handle) if isinstance(call, ast.Call)]
    assert "self._check" in order and "self.store.record" in order
    check = _function(service, "Outbound", "_check")
    first = min(
        (call for call in ast.walk(check) if isinstance(call, ast.Call)),
        key=lambda c: (c.lineno, c.col_offset),
    )
    assert ast.unparse(first.func) == "self.store.live_session", "the session is the first thing checked"
    # A reply is recorded only from what _check returned (it refused otherwise).
    record = next(
        call
        for call in ast.walk(handle)
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "self.store.record"
    )
    assert [ast.unparse(arg) for arg in record.args] == ["checked"]

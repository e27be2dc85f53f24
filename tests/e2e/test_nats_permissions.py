"""The documented NATS permissions file, on a real server: each service can do its job and no more."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from sqlmodel import select

from shared.commands import Claim, SendReply, msg_id_of, subject_of
from shared.db.models import CommandOutcomeRow, ConversationRow, TimelineRow
from shared.db.session import create_engine, session_factory
from shared.messages import command_outgoing
from shared.subjects import COMMANDS_STREAM
from stayhuman.natsserver import EmbeddedNats, free_port, free_ports
from tests.e2e.stack import post_webhook
from tests.helpers import config_yaml, eventually, generic_body, installation_keys
from tests.smtp import SmtpServer

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
SECRET = "permissions-secret-0123456789"
PASSWORDS = {
    "ingest": "ingest-pw-123",
    "router": "router-pw-456",
    "notify": "notify-pw-789",
    "api": "api-pw-321",
    "outbound": "outbound-pw-654",
}
OPERATOR_PASSWORD = "operator-pw-000"


@pytest.fixture
def secured_nats(tmp_path: Path) -> Iterator[EmbeddedNats]:
    folder = tmp_path / "nats"
    folder.mkdir()
    shutil.copy(ROOT / "deploy" / "k8s" / "base" / "nats" / "permissions.conf", folder / "permissions.conf")
    (folder / "nats.conf").write_text("include permissions.conf\n")
    os.environ.update({f"NATS_{name.upper()}_PASSWORD": password for name, password in PASSWORDS.items()})
    os.environ["NATS_OPERATOR_PASSWORD"] = OPERATOR_PASSWORD
    server = EmbeddedNats(folder / "store", extra_args=["-c", str(folder / "nats.conf")])
    yield server.start()
    server.stop()


def service(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "stayhuman", name],
        env={**env, "STAYHUMAN_NATS_USER": name, "STAYHUMAN_NATS_PASSWORD": PASSWORDS[name]},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )


async def test_each_service_works_with_its_own_user_and_is_held_to_its_subjects(
    tmp_path: Path, secured_nats: EmbeddedNats
) -> None:
    smtp = SmtpServer().start()
    ports = dict(zip(PASSWORDS, free_ports(len(PASSWORDS)), strict=True))
    # ingest's, notify's and the api's readiness is on their operations listeners
    ops_port, notify_ops, api_ops = free_ports(3)
    database = f"sqlite+aiosqlite:///{tmp_path / 'stayhuman.db'}"
    env = {
        **os.environ,
        **installation_keys(),
        "STAYHUMAN_NATS_URL": secured_nats.url,
        "STAYHUMAN_DATABASE_URL": database,
        "STAYHUMAN_SMTP_HOST": "127.0.0.1",
        "STAYHUMAN_SMTP_PORT": str(smtp.port),
        "STAYHUMAN_SMTP_SECURITY": "none",
        **{f"STAYHUMAN_{name.upper()}_PORT": str(port) for name, port in ports.items()},
        "STAYHUMAN_INGEST_OPS_PORT": str(ops_port),
        "STAYHUMAN_NOTIFY_OPS_PORT": str(notify_ops),
        "STAYHUMAN_API_OPS_PORT": str(api_ops),
    }
    (tmp_path / "acme.yaml").write_text(
        config_yaml(tenant="acme", account="acme-fb", secret=SECRET, people=["maria"], first_response="2s")
    )
    for command in (["migrate"], ["apply", "-f", str(tmp_path / "acme.yaml")]):
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "stayhuman", *command],
            env=env,
            check=True,
            capture_output=True,
        )
    log = tmp_path / "services.log"
    processes = [service(name, env, log) for name in PASSWORDS]
    try:
        async with httpx.AsyncClient() as client:

            async def ready() -> bool:
                for port in [ops_port, ports["router"], notify_ops, api_ops, ports["outbound"]]:
                    try:
                        if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code != 200:
                            return False
                    except httpx.HTTPError:
                        return False
                return True

            await eventually(
                ready, timeout=60, interval=0.2, what=f"the services ({log.read_text()[-2000:]})"
            )
            stack = type("S", (), {"url": lambda self, s, p: f"http://127.0.0.1:{ports[s]}{p}"})()
            response = await post_webhook(
                client, stack, "acme-fb", SECRET, generic_body("perm-1", thread_id="perm")
            )  # type: ignore[arg-type]
            assert response.status_code == 202

        engine = create_engine(database)

        async def assigned() -> ConversationRow | None:
            async with session_factory(engine)() as session:
                return (
                    await session.exec(select(ConversationRow).where(ConversationRow.owner_id == "maria"))
                ).first()

        conversation = await eventually(assigned, timeout=20, what="the assignment")
        assert conversation is not None

        async def in_the_timeline() -> TimelineRow | None:
            # the api consumed the assignment from the events stream, as its own user
            async with session_factory(engine)() as session:
                query = select(TimelineRow).where(
                    TimelineRow.conversation_id == conversation.id,
                    TimelineRow.kind == "conversation.assigned",
                )
                return (await session.exec(query)).first()

        await eventually(in_the_timeline, timeout=20, what="the assignment in the api's timeline")
        await engine.dispose()

        async def mailed() -> bool:
            return any(conversation.id in m.body for m in smtp.messages())

        await eventually(mailed, timeout=20, what="the overdue email")

        # the api's user may send a person's command, and gets the JetStream ack it waits for
        api = await nats.connect(secured_nats.url, user="api", password=PASSWORDS["api"])
        try:
            claim = Claim(
                tenant_id="acme", conversation_id=conversation.id, person_id="maria", issued_by="maria"
            )
            ack = await api.jetstream().publish(
                subject_of(claim),
                claim.model_dump_json().encode(),
                headers={"Nats-Msg-Id": msg_id_of(claim)},
                timeout=5,
            )
            assert ack.stream == COMMANDS_STREAM
            # ... and a reply a person wrote, which outbound takes and answers as its own user (this
            # one names no live session: refused, and nothing reaches a platform)
            reply = SendReply(
                tenant_id="acme", conversation_id=conversation.id, person_id="maria", session="0" * 64,
                text="On its way!", issued_by="maria",
            )  # fmt: skip
            outgoing = command_outgoing(reply)
            ack = await api.jetstream().publish(
                outgoing.subject, outgoing.payload, headers=outgoing.all_headers(), timeout=5
            )
            assert ack.stream == COMMANDS_STREAM
        finally:
            await api.close()

        async def reply_refused() -> CommandOutcomeRow | None:
            async with session_factory(engine)() as session:
                return await session.get(CommandOutcomeRow, reply.command_id)

        engine = create_engine(database)
        outcome = await eventually(reply_refused, timeout=20, what="outbound's outcome of the reply")
        await engine.dispose()
        assert outcome is not None and outcome.outcome == "rejected" and "session" in outcome.reason

        # held to their subjects: neither ingest nor the api may publish the router's events
        for user in ("ingest", "api", "outbound"):
            errors = await errors_publishing(secured_nats.url, user, "sh.conv.acme.x.assigned")
            assert any("permissions violation" in str(error).lower() for error in errors), (user, errors)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
        smtp.stop()


async def errors_publishing(url: str, user: str, subject: str) -> list[Exception]:
    """What the server answers `user` publishing on `subject`."""
    errors: list[Exception] = []

    async def collect(error: Exception) -> None:
        errors.append(error)

    nc = await nats.connect(url, user=user, password=PASSWORDS[user], error_cb=collect)
    await nc.publish(subject, b"{}")
    await nc.flush()
    await asyncio.sleep(0.5)
    await nc.close()
    return errors


def test_a_wrong_password_stops_the_service_with_a_clear_error(
    tmp_path: Path, secured_nats: EmbeddedNats
) -> None:
    env = {
        **os.environ,
        **installation_keys(),
        "STAYHUMAN_NATS_URL": secured_nats.url,
        "STAYHUMAN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        "STAYHUMAN_INGEST_PORT": str(free_port()),
        "STAYHUMAN_INGEST_OPS_PORT": str(free_port()),
        "STAYHUMAN_NATS_USER": "ingest",
        "STAYHUMAN_NATS_PASSWORD": "wrong",
        "STAYHUMAN_LOG_JSON": "false",
    }
    subprocess.run([sys.executable, "-m", "stayhuman", "migrate"], env=env, check=True, capture_output=True)
    result = subprocess.run(
        [sys.executable, "-m", "stayhuman", "ingest"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Authorization Violation" in result.stderr


def make_certificates(folder: Path) -> dict[str, Path]:
    """A private CA and a server certificate for 127.0.0.1, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    run = lambda *args: subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=StayHuman test CA")  # fmt: skip
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.ext")  # fmt: skip
    return {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}


async def test_services_connect_to_nats_over_tls(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "tls")
    server = EmbeddedNats(
        tmp_path / "nats",
        extra_args=["--tls", "--tlscert", str(certificates["cert"]), "--tlskey", str(certificates["key"])],
    ).start()
    port = free_port()
    env = {
        **os.environ,
        **installation_keys(),
        "STAYHUMAN_NATS_URL": f"tls://127.0.0.1:{server.port}",
        "STAYHUMAN_NATS_TLS_CA": str(certificates["ca"]),
        "STAYHUMAN_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        "STAYHUMAN_INGEST_PORT": str(free_port()),
        "STAYHUMAN_INGEST_OPS_PORT": str(port),
    }
    await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "stayhuman", "migrate"], env=env, check=True
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "stayhuman", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient() as client:

            async def ready() -> bool:
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready, timeout=30, what="ingest connected over TLS")
        # without the CA, the server's certificate is not trusted and the service stops
        untrusted = subprocess.run(
            [sys.executable, "-m", "stayhuman", "ingest"],
            env={
                **env,
                "STAYHUMAN_NATS_TLS_CA": "",
                "STAYHUMAN_NATS_CONNECT_TIMEOUT": "3s",
                "STAYHUMAN_INGEST_PORT": str(free_port()),
                "STAYHUMAN_INGEST_OPS_PORT": str(free_port()),
            },
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert untrusted.returncode != 0
        assert "could not connect to NATS" in untrusted.stderr
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    finally:
        process.terminate()
        process.wait(timeout=30)
        server.stop()

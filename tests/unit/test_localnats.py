"""The embedded NATS of `up`: passwords its configuration can read, kept for the state folder."""

import json
import subprocess
from pathlib import Path

from stayhuman import localnats
from stayhuman.natsserver import find_binary


def test_passwords_are_read_by_the_server_configuration_and_kept(tmp_path: Path) -> None:
    """A value that begins with a digit or a `-` is taken for a number by the configuration
    parser and refused (it did, now and then, with URL-safe random passwords)."""
    (tmp_path / "nats").mkdir()
    (tmp_path / "nats" / "users.json").write_text(
        json.dumps({"ingest": "-Mk1", "router": "9abc", "notify": "ok1", "operator": "ok2"})
    )
    users = localnats.passwords(tmp_path)
    assert all(p.startswith("sh") and p.isalnum() for p in users.values())
    assert localnats.passwords(tmp_path) == users  # kept for the next `up`
    config = localnats.server_config(tmp_path)
    for _ in range(20):  # many passwords: none the parser refuses
        env = localnats.server_environment({u: localnats._password() for u in users})
        checked = subprocess.run(
            [find_binary(), "-c", str(config), "-t"], env=env, capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0, checked.stderr


def test_a_state_folder_from_before_the_api_gets_a_user_for_every_service(tmp_path: Path) -> None:
    """`up` on a state folder whose server had no `api` or `outbound` user: every service, those
    too, gets a password the server's configuration reads, and a server without one refuses to
    start."""
    (tmp_path / "nats").mkdir()
    before = {"ingest": "shaaa1", "router": "shbbb2", "notify": "shccc3", "operator": "shddd4"}
    (tmp_path / "nats" / "users.json").write_text(json.dumps(before))
    users = localnats.passwords(tmp_path)
    assert set(users) == {"ingest", "router", "notify", "api", "outbound", "operator"}
    assert json.loads((tmp_path / "nats" / "users.json").read_text()) == users
    config = localnats.server_config(tmp_path)
    env = localnats.server_environment(users)
    assert env["NATS_API_PASSWORD"] == users["api"]
    assert env["NATS_OUTBOUND_PASSWORD"] == users["outbound"]
    checked = subprocess.run(
        [find_binary(), "-c", str(config), "-t"], env=env, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stderr
    for variable in ("NATS_API_PASSWORD", "NATS_OUTBOUND_PASSWORD"):
        without = {name: value for name, value in env.items() if name != variable}
        refused = subprocess.run(
            [find_binary(), "-c", str(config), "-t"], env=without, capture_output=True, text=True, timeout=30
        )
        assert refused.returncode != 0 and variable in refused.stderr + refused.stdout

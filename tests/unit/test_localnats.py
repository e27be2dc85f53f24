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

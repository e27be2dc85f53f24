"""`stayhuman bench` end to end, at a tiny size: it starts everything itself and writes every
figure of the default run, each measured (no speed is asserted: machines are noisy)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

FIGURES = {
    "raw_jetstream",
    "webhook_ack",
    "webhook_to_assigned",
    "batch_to_assigned",
    "router_alone",
    "deadline_armed",
    "paced_ingest_to_assigned_p99",
}


def test_bench_measures_every_figure_and_writes_them(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    tiny = ["--reference", "2000", "--webhooks", "300", "--batch-seconds", "1", "--router", "300",
            "--deadlines", "300", "--paced-rate", "200", "--paced-seconds", "1", "--tenants", "2"]  # fmt: skip
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stayhuman",
            "bench",
            "--quick",
            "--loadgen",
            "python",
            *tiny,
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(out.read_text())
    figures = {figure["key"]: figure for figure in found["figures"]}
    assert set(figures) == FIGURES
    assert all(figure["value"] > 0 for figure in figures.values()), figures
    assert figures["webhook_ack"]["p99_ms"] > 0
    assert figures["webhook_ack"]["ratio_to_reference"].startswith("1/")
    assert found["machine"]["cpus"] >= 1 and found["machine"]["nats_server"]
    assert found["settings"]["loadgen"] == "python"
    assert f"figures written to {out}" in done.stdout
    assert "| signed webhooks -> JetStream ack" in done.stdout
    # each part measured on its own, the others paused and continued afterwards (the paced figure
    # after them needs every service)
    assert figures["webhook_ack"]["note"].endswith("api, notify, outbound, router paused meanwhile")
    assert figures["router_alone"]["note"].endswith("api, ingest, notify, outbound paused meanwhile")
    assert figures["deadline_armed"]["note"].endswith("api, ingest, outbound, router paused meanwhile")
    assert figures["batch_to_assigned"]["note"].endswith("api, notify, outbound paused meanwhile")
    assert figures["webhook_to_assigned"]["note"].startswith("every service running")

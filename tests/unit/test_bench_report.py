"""The benchmark's pure part: percentiles, ratios to raw JetStream, targets, the table and JSON."""

import json

import pytest

from stayhuman.bench.main import sizes_of
from stayhuman.bench.options import add_arguments
from stayhuman.bench.phases import QUICK, config_yaml, tenants_of
from stayhuman.bench.report import Figure, Target, document, percentile, ratio, table


def test_percentiles_are_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100, shuffled order does not matter
    assert percentile(list(reversed(values)), 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(values, 0.0) == 1.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.99) == 0.0
    with pytest.raises(ValueError):
        percentile(values, 99)


def test_ratios_are_written_one_in_n() -> None:
    assert ratio(650, 46_000) == "1/71"
    assert ratio(5_000, 46_000) == "1/9.2"
    assert ratio(46_000, 46_000) == "1/1.0"
    assert ratio(0, 46_000) == "-"
    assert ratio(100, 0) == "-"


def webhook_figure(value: float, p99: float) -> Figure:
    return Figure(
        key="webhook_ack",
        title="signed webhooks -> JetStream ack",
        database="SQLite",
        value=value,
        unit="/s",
        p50_ms=p99 / 2,
        p99_ms=p99,
        targets=[Target("value", ">=", 3000, "/s"), Target("p99", "<=", 50, "ms")],
    )


def test_a_figure_meets_its_target_only_when_every_part_is_met() -> None:
    assert webhook_figure(3500, 40).met(None) is True
    assert webhook_figure(3500, 60).met(None) is False  # fast, but its p99 too slow
    assert webhook_figure(2500, 40).met(None) is False
    batch = Figure("batch", "batch", "SQLite", 6000, "/s", targets=[Target("value", ">=", 5000, "/s")],
                   target_from_reference=0.1)  # fmt: skip
    assert batch.met(50_000) is True
    assert batch.met(70_000) is False  # under 1/10 of raw JetStream in the same run
    assert Figure("x", "x", "SQLite", 1.0, "/s").met(100.0) is None  # no target: neither
    faster = Figure("r", "3 vs 1", "PostgreSQL", 1.5, "x", targets=[Target("value", ">", 1.0, "x")])
    assert faster.met(None) is True


def test_the_table_shows_each_figure_with_its_ratio_target_and_outcome() -> None:
    reference = Figure("raw_jetstream", "raw JetStream", "-", 46_000, "/s")
    figures = [reference, webhook_figure(650, 200)]
    lines = table(figures, 46_000).splitlines()
    assert lines[0].startswith("| figure ")
    assert set(lines[1]) <= {"|", "-"}
    raw, webhooks = lines[2], lines[3]
    assert "46,000/s" in raw and "1/" not in raw  # the reference is not compared with itself
    cells = [cell.strip() for cell in webhooks.strip("|").split("|")]
    assert cells == [
        "signed webhooks -> JetStream ack", "SQLite", "650/s", "100 ms", "200 ms", "1/71",
        ">= 3,000/s, p99 <= 50.0 ms", "no",
    ]  # fmt: skip
    assert len({len(line) for line in lines}) == 1  # columns aligned


def test_the_json_document_holds_the_machine_settings_and_every_figure() -> None:
    figures = [Figure("raw_jetstream", "raw", "-", 46_000, "/s"), webhook_figure(3200, 30)]
    found = json.loads(json.dumps(document(figures, 46_000, {"cpus": 2}, {"mode": "quick"})))
    assert found["machine"] == {"cpus": 2}
    assert found["settings"] == {"mode": "quick"}
    assert found["reference_per_second"] == 46_000
    webhooks = found["figures"][1]
    assert webhooks["key"] == "webhook_ack"
    assert webhooks["value"] == 3200 and webhooks["p99_ms"] == 30
    assert webhooks["ratio_to_reference"] == "1/14"
    assert webhooks["target"] == ">= 3,000/s, p99 <= 50.0 ms"
    assert webhooks["met"] is True
    assert found["figures"][0]["ratio_to_reference"] is None


def test_sizes_come_from_the_preset_and_the_options_given() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sizes = sizes_of(parser.parse_args(["--quick", "--router", "500"]))
    assert sizes.router == 500
    assert sizes.deadlines == QUICK.deadlines


def test_the_configuration_gives_each_tenant_its_account_team_and_token() -> None:
    import yaml

    tenants = tenants_of(3)
    document = yaml.safe_load(config_yaml(tenants))
    assert [t["id"] for t in document["tenants"]] == ["bench0", "bench1", "bench2", "benchdue"]
    first = document["tenants"][0]
    assert first["accounts"][0]["id"] == "bench0-fb"
    assert first["api_tokens"][0]["token"] == tenants[0].token
    assert first["sla_policies"][0]["first_response"] == "8h"
    assert document["tenants"][-1]["sla_policies"][0]["first_response"] == "1m"
    assert len(document["people"]) == 3 * 4 + 1

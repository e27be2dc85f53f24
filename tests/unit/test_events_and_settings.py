from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.router.settings import RouterSettings
from shared.events import DeadlineChanged, conversation_event_adapter
from shared.settings import SettingsError, load_settings


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValidationError, match="timezone offset"):
        DeadlineChanged(
            tenant_id="t",
            conversation_id="c",
            account_id="a",
            deadline_version=1,
            kind=None,
            owner_id=None,
            started_at=None,
            warn_at=None,
            due_at=datetime(2026, 1, 1),
            reason="x",
        )


def test_events_decode_by_type() -> None:
    raw = (
        '{"type": "conversation.responded", "version": 1, "tenant_id": "t", "conversation_id": "c",'
        ' "account_id": "a", "interaction_id": "i", "responded_at": "2026-11-26T10:00:00Z"}'
    )
    event = conversation_event_adapter.validate_json(raw)
    assert event.responded_at == datetime(2026, 11, 26, 10, tzinfo=UTC)  # type: ignore[union-attr]


def test_a_newer_event_version_is_refused() -> None:
    raw = (
        '{"type": "conversation.responded", "version": 2, "tenant_id": "t", "conversation_id": "c",'
        ' "account_id": "a", "interaction_id": "i", "responded_at": "2026-11-26T10:00:00Z"}'
    )
    with pytest.raises(ValidationError):
        conversation_event_adapter.validate_json(raw)


def test_settings_read_durations_and_name_bad_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAYHUMAN_BACKFILL_CUTOFF", "12h")
    monkeypatch.setenv("STAYHUMAN_ROUTER_ACK_WAIT", "2.5")
    settings = load_settings(RouterSettings)
    assert settings.backfill_cutoff == timedelta(hours=12)
    assert settings.router_ack_wait == timedelta(seconds=2.5)
    monkeypatch.setenv("STAYHUMAN_ROUTER_BATCH_SIZE", "lots")
    with pytest.raises(SettingsError, match="STAYHUMAN_ROUTER_BATCH_SIZE"):
        load_settings(RouterSettings)


def test_log_lines_carry_their_fields_and_correlation_id() -> None:
    import json
    import logging

    from shared.logs import JsonFormatter, PlainFormatter, correlation_id

    record = logging.makeLogRecord({"msg": "conversation assigned", "levelname": "INFO", "owner_id": "maria"})
    token = correlation_id.set("c-123")
    try:
        entry = json.loads(JsonFormatter("router").format(record))
        plain = PlainFormatter("router").format(record)
    finally:
        correlation_id.reset(token)
    assert entry["msg"] == "conversation assigned" and entry["service"] == "router"
    assert entry["owner_id"] == "maria" and entry["correlation_id"] == "c-123"
    assert plain.endswith("router INFO conversation assigned owner_id=maria correlation_id=c-123")

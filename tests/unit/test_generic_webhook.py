import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from services.ingest.generic import GenericInteraction, normalise, sign, signature_valid
from shared.events import Direction, Platform
from tests.helpers import generic_body

SECRET = "a-test-secret-of-some-length"


def test_signature_accepts_exact_body_only() -> None:
    body = generic_body("m1")
    assert signature_valid(secret=SECRET, body=body, header=sign(SECRET, body))
    assert signature_valid(
        secret=SECRET, body=body, header=sign(SECRET, body).upper().replace("SHA256", "sha256")
    )
    assert not signature_valid(secret=SECRET, body=body + b" ", header=sign(SECRET, body))
    assert not signature_valid(secret="other-secret-value", body=body, header=sign(SECRET, body))


@pytest.mark.parametrize("header", [None, "", "sha256=", "sha1=abc", "sha256=zz" + "0" * 62, "0" * 64])
def test_signature_rejects_malformed_headers(header: str | None) -> None:
    assert not signature_valid(secret=SECRET, body=b"{}", header=header)


def test_normalise_derives_ids_and_keeps_platform_time() -> None:
    created = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    payload = GenericInteraction.model_validate_json(generic_body("m1", created_at=created))
    event = normalise(
        payload,
        tenant_id="acme",
        account_id="acme-fb",
        platform=Platform.facebook,
        received_at=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
        correlation_id="c1",
    )
    assert event.created_at == created
    assert event.direction is Direction.inbound
    assert (
        event.interaction_id
        == normalise(
            payload,
            tenant_id="acme",
            account_id="acme-fb",
            platform=Platform.facebook,
            received_at=datetime(2026, 11, 26, 11, 0, tzinfo=UTC),
            correlation_id="c2",
        ).interaction_id
    )


def test_offsets_are_converted_to_utc() -> None:
    body = json.loads(generic_body("m1"))
    body["created_at"] = "2026-11-26T10:00:00+02:00"
    assert GenericInteraction.model_validate(body).created_at == datetime(2026, 11, 26, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"created_at": "2026-11-26T10:00:00"}, "created_at"),
        ({"kind": "tweet"}, "kind"),
        ({"direction": "sideways"}, "direction"),
        ({"external_id": ""}, "external_id"),
        ({"external_id": "has space"}, "external_id"),
        ({"author": {"name": "no id"}}, "author"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_invalid_bodies_name_the_field(change: dict[str, object], field: str) -> None:
    body = {**json.loads(generic_body("m1")), **change}
    with pytest.raises(ValidationError) as error:
        GenericInteraction.model_validate(body)
    assert field in {str(item["loc"][0]) for item in error.value.errors()}

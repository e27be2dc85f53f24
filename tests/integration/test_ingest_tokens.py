"""The batch API takes a tenant's live tenant-admin tokens only: a revoked token, or one that may
only read reports, submits nothing."""

from datetime import UTC, datetime

from services.ingest.accounts import TokenDirectory
from shared import ids
from shared.db.models import ApiTokenRow, TenantRow
from shared.db.session import create_engine, session_factory


async def test_only_live_tenant_admin_tokens_name_their_tenant(database_url: str) -> None:
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    tokens = {
        "live": ("tenant_admin", None),
        "revoked": ("tenant_admin", datetime(2026, 11, 30, tzinfo=UTC)),
        "reports": ("client_viewer", None),
    }
    try:
        async with sessions() as session:
            session.add(TenantRow(id="kettle", name="Kettle"))
            await session.flush()
            for name, (role, revoked_at) in tokens.items():
                session.add(
                    ApiTokenRow(
                        id=ids.api_token_id(tenant_id="kettle", name=name),
                        tenant_id="kettle",
                        name=name,
                        token_sha256=ids.token_sha256(f"{name}-token-0123456789abcdef"),
                        role=role,
                        revoked_at=revoked_at,
                    )
                )
            await session.commit()
        directory = TokenDirectory(sessions, ttl_seconds=0)
        found = {name: await directory.tenant_of(f"{name}-token-0123456789abcdef") for name in tokens}
        assert found == {"live": "kettle", "revoked": None, "reports": None}
        assert await directory.tenant_of("never-issued-token-0123456789") is None
    finally:
        await engine.dispose()

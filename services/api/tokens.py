"""A tenant's API tokens: listed, made (the token shown once) and revoked.

A token carries one tenant and one role, `tenant_admin` or `client_viewer`. Only its SHA-256
is stored; the token itself is in the answer that makes it and nowhere else. Tokens come
from two places, told apart by `source`: the configuration file (`stayhuman apply`, "config")
and this API ("api"). `apply` writes and prunes only the file's tokens, so a token made here
survives every apply; a name is one token in its tenant, whichever made it, and a revoked
token keeps its name.

Revoking works on both. A revoked token of the file stays revoked while the file gives it the
same value: `apply` makes it active again only when its value in the file changes, so a
leaked token is revoked here at once and comes back only as a new secret.
"""

import logging
import secrets
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from services.api.access import Action
from services.api.auth import clock_of, digest, problems, who
from services.api.scope import Access, access
from shared import ids
from shared.db.models import ApiTokenRow, TenantRow

log = logging.getLogger(__name__)

Slug = Annotated[str, Field(pattern=ids.SLUG_PATTERN, max_length=63)]
TenantId = Annotated[str, Path(pattern=ids.SLUG_PATTERN, max_length=63)]
TokenName = Annotated[str, Path(pattern=ids.SLUG_PATTERN, max_length=63)]
TokenRole = Literal["tenant_admin", "client_viewer"]
PREFIX = "sh_"


class TokenListed(BaseModel):
    name: str
    role: str
    source: str = Field(description="config: from the configuration file; api: made in the API.")
    created_by: str = Field(description='A person\'s id, "token:<name>", or "" for the configuration.')
    created_at: datetime
    last_used_at: datetime | None = Field(description="Stamped at most once a minute.")
    revoked_at: datetime | None


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Slug = Field(description="Unique in the tenant: lowercase letters, digits, - and _.")
    role: TokenRole = "tenant_admin"


class MadeToken(BaseModel):
    name: str
    role: str
    token: str = Field(description="Shown this once; send it as Authorization: Bearer <token>.")


def _listed(row: ApiTokenRow) -> TokenListed:
    return TokenListed(
        name=row.name,
        role=row.role,
        source=row.source,
        created_by=row.created_by,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )


def tokens_router() -> APIRouter:
    router = APIRouter(tags=["API tokens"])

    @router.get(
        "/api/tenants/{tenant_id}/tokens",
        response_model=list[TokenListed],
        responses=problems(400, 401, 403, 404),
        summary="A tenant's API tokens (never their values)",
    )
    async def list_tokens(
        tenant_id: TenantId, asking: Annotated[Access, Depends(access)]
    ) -> list[TokenListed]:
        asking.tenant(tenant_id, Action.read_config)
        if await asking.session.get(TenantRow, tenant_id) is None:
            raise HTTPException(404, {"error": "no tenant", "field": "tenant"})
        rows = (
            await asking.session.exec(
                select(ApiTokenRow)
                .where(
                    ApiTokenRow.tenant_id == tenant_id,
                    asking.tenants(Action.read_config, ApiTokenRow.tenant_id),
                )
                .order_by(col(ApiTokenRow.name))
            )
        ).all()
        return [_listed(row) for row in rows]

    @router.post(
        "/api/tenants/{tenant_id}/tokens",
        status_code=201,
        response_model=MadeToken,
        responses=problems(400, 401, 403, 404, 409),
        summary="Make an API token of the tenant; the answer shows it once",
    )
    async def make_token(
        tenant_id: TenantId, body: NewToken, request: Request, asking: Annotated[Access, Depends(access)]
    ) -> MadeToken:
        asking.tenant(tenant_id, Action.manage)
        if await asking.session.get(TenantRow, tenant_id) is None:
            raise HTTPException(404, {"error": "no tenant", "field": "tenant"})
        taken = HTTPException(
            409,
            {
                "error": f"tenant {tenant_id} has a token named {body.name} already (a revoked one keeps "
                "its name): choose another name",
                "field": "name",
            },
        )
        existing = (
            await asking.session.exec(
                select(ApiTokenRow.id).where(
                    ApiTokenRow.tenant_id == tenant_id, ApiTokenRow.name == body.name
                )
            )
        ).first()
        if existing is not None:
            raise taken
        token = PREFIX + secrets.token_urlsafe(32)
        asking.session.add(
            ApiTokenRow(
                id=ids.api_token_id(tenant_id=tenant_id, name=body.name),
                tenant_id=tenant_id,
                name=body.name,
                token_sha256=digest(token),
                role=body.role,
                source="api",
                created_by=who(asking),
                created_at=clock_of(request)(),
            )
        )
        try:
            await asking.session.commit()
        except IntegrityError:  # made by another request a moment ago
            await asking.session.rollback()
            raise taken from None
        log.info(
            "API token made",
            extra={"tenant": tenant_id, "token_name": body.name, "role": body.role, "by": who(asking)},
        )
        return MadeToken(name=body.name, role=body.role, token=token)

    @router.delete(
        "/api/tenants/{tenant_id}/tokens/{name}",
        status_code=204,
        response_class=Response,
        responses=problems(400, 401, 403, 404),
        summary="Revoke an API token (of the API or of the configuration file)",
    )
    async def revoke_token(
        tenant_id: TenantId, name: TokenName, request: Request, asking: Annotated[Access, Depends(access)]
    ) -> Response:
        """Revoking is at once and for good: a revoked token is refused from its next request.
        Revoking one already revoked changes nothing. A token of the configuration file stays
        revoked until the file gives it a new value (see the module's docstring)."""
        asking.tenant(tenant_id, Action.manage)
        row = (
            await asking.session.exec(
                select(ApiTokenRow).where(
                    ApiTokenRow.tenant_id == tenant_id,
                    ApiTokenRow.name == name,
                    asking.tenants(Action.manage, ApiTokenRow.tenant_id),
                )
            )
        ).first()
        if row is None:
            raise HTTPException(
                404, {"error": f"no token named {name} in tenant {tenant_id}", "field": "name"}
            )
        if row.revoked_at is None:
            row.revoked_at = clock_of(request)()
            await asking.session.commit()
            log.info(
                "API token revoked",
                extra={"tenant": tenant_id, "token_name": name, "source": row.source, "by": who(asking)},
            )
        return Response(status_code=204)

    return router

"""Prometheus exposition for every service: `GET /metrics`."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


def metrics_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router

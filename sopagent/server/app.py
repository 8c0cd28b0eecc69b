"""The ASGI application factory: ``create_app(config)``; ``app_from_env()`` for uvicorn workers."""

from __future__ import annotations

import logging
import os
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sopagent.errors import ApiKeyError, ConversationError, SopAgentError, StoreError
from sopagent.models.base import DecisionModel, WarmableModel
from sopagent.server import openai_compat, routes_conversations, routes_operator, routes_web
from sopagent.server.config import ServeConfig
from sopagent.server.limits import LimitExceeded
from sopagent.server.schemas import Health
from sopagent.server.service import ApiProblem, Service

log = logging.getLogger("sopagent.server")


def create_app(config: ServeConfig, model: DecisionModel | None = None) -> FastAPI:
    """Build the service: policies loaded, store opened, model ready (``model`` overrides ``config.model``)."""
    settings = config.settings()
    if model is None:
        from sopagent.compose import open_model

        model = open_model(settings, threads=config.model_threads)
    service = Service(config, model, settings)
    if isinstance(service.model.inner, WarmableModel):
        for agent in service.agents.values():
            service.model.inner.warm([s.facts for s in agent.policy.steps.values() if s.facts.model_fields])
    app = FastAPI(title="sopagent", version="0.1.0",
                  description="Support-bot backend: every reply is a catalog response whose decision was "
                              "committed to the audit store before it is returned.")
    app.state.service = service
    app.include_router(routes_conversations.router)
    app.include_router(routes_operator.router)
    app.include_router(openai_compat.router)
    app.include_router(routes_web.router)
    _health(app, service)
    _handlers(app)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` worker processes (configuration in ``$SOPAGENT_SERVE_CONFIG``)."""
    return create_app(ServeConfig.from_env())


def _health(app: FastAPI, service: Service) -> None:
    @app.get("/healthz", response_model=Health, tags=["health"])
    def liveness() -> Health:
        """The process is up (no dependencies checked)."""
        return Health(status="ok", process=os.getpid())

    @app.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    def readiness() -> Any:
        """The audit store answers; 503 otherwise (take this process out of the load balancer)."""
        problem = service.ready()
        if problem:
            return JSONResponse(Health(status="unavailable", detail=problem).model_dump(), status_code=503)
        return Health(status="ok", detail=f"policies: {', '.join(sorted(service.agents))}", process=os.getpid())


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def api_problem(_: Request, exc: ApiProblem) -> JSONResponse:
        return _problem(exc.status, exc.message)

    @app.exception_handler(LimitExceeded)
    async def over_limit(_: Request, exc: LimitExceeded) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for error in exc.errors()[:5]:
            where = ".".join(str(p) for p in error.get("loc", ()))
            parts.append(f"{where}: {error.get('msg')}")
        return _problem(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 400 and "parsing the body" in message:
            message = "the request body is not valid JSON in UTF-8; send a JSON object"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(StoreError)
    async def store_down(_: Request, exc: StoreError) -> JSONResponse:
        log.error("audit store error: %s", exc)
        return _problem(503, f"{exc}; nothing was sent. Retry later (GET /readyz shows when the store is back)")

    @app.exception_handler(ApiKeyError)
    async def key_error(_: Request, exc: ApiKeyError) -> JSONResponse:
        return _problem(401, str(exc))

    @app.exception_handler(ConversationError)
    async def conversation_error(_: Request, exc: ConversationError) -> JSONResponse:
        return _problem(409, str(exc))

    @app.exception_handler(SopAgentError)
    async def other(_: Request, exc: SopAgentError) -> JSONResponse:
        log.error("request failed: %s", exc)
        return _problem(503 if exc.retryable else 500, str(exc))


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by Content-Length or by counting the stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_big = _problem(413, f"the request body is over {self.max_bytes} bytes; send a shorter message")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_big(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise StarletteHTTPException(413, f"the request body is over {self.max_bytes} bytes")
            return message

        await self.app(scope, counted, send)

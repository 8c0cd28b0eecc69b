"""API-key authentication: ``Authorization: Bearer KEY`` (what the openai client sends) or ``X-API-Key``.

A web page's ``browser`` key only starts conversations; each start gives that visitor a ``conversation``
key for the one conversation. Missing or unknown/revoked key: 401. A key of the wrong scope: 403.
Keys are never logged; only their public id appears in errors.
"""

from __future__ import annotations

from typing import Annotated, AsyncIterator, Callable

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from sopagent.server.keys import CONVERSATION_SCOPE, ApiKey, authenticate, digest
from sopagent.server.service import ApiProblem, Service

bearer = HTTPBearer(auto_error=False, description="an API key from `sopagent keys create`")
header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, as a header")


def _presented(credentials: HTTPAuthorizationCredentials | None, api_key: str | None) -> str | None:
    return credentials.credentials if credentials else api_key


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def admit(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                api_key: Annotated[str | None, Depends(header_key)]) -> None:
    """The limits that need no database: the client address's wrong-key count and the presented key's
    rate, checked on the event loop before the key is looked up, so a flood is answered 429 without
    waiting for a thread or touching the store."""
    service: Service = request.app.state.service
    service.limits.check_address(_address(request))
    presented = _presented(credentials, api_key)
    if presented:
        service.limits.hit(digest(presented)[:16])


async def long_poll_place(request: Request,
                          credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
                          api_key: Annotated[str | None, Depends(header_key)]) -> AsyncIterator[None]:
    """Hold one of the presented key's long-poll places while the long-poll runs (429 when none is free),
    taken before the key is looked up."""
    service: Service = request.app.state.service
    with service.limits.long_poll(digest(_presented(credentials, api_key) or "")[:16]):
        yield


def require(*scopes: str) -> Callable[..., ApiKey]:
    """A dependency that returns the caller's key if it has one of ``scopes`` (after :func:`admit`)."""

    def check(request: Request, _: Annotated[None, Depends(admit)],
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
              api_key: Annotated[str | None, Depends(header_key)]) -> ApiKey:
        presented = _presented(credentials, api_key)
        service: Service = request.app.state.service
        address = _address(request)
        if not presented:
            service.limits.failed(address)
            raise ApiProblem(401, "no API key: send `Authorization: Bearer KEY` "
                                  "(create one with `sopagent keys create --scope customer`)")
        key = authenticate(service.store, presented)
        if key is None:
            service.limits.failed(address)
            raise ApiProblem(401, "unknown or revoked API key; create a new one with `sopagent keys create`")
        if key.scope not in scopes:
            raise ApiProblem(403, f"key {key.id} has scope {key.scope!r}; this endpoint needs "
                                  f"{' or '.join(scopes)} (create one with `sopagent keys create --scope {scopes[0]}`)")
        return key

    return check


CustomerKey = Annotated[ApiKey, Depends(require("customer"))]
OperatorKey = Annotated[ApiKey, Depends(require("operator"))]
AnyKey = Annotated[ApiKey, Depends(require("customer", "operator"))]
StartingKey = Annotated[ApiKey, Depends(require("customer", "browser"))]
"""Who may open a conversation: a chat back end, or a web page's published key."""
ChannelKey = Annotated[ApiKey, Depends(require("customer", CONVERSATION_SCOPE))]
"""Who may post a customer's message: a chat back end, or the key of that one conversation."""
WaitingKey = Annotated[ApiKey, Depends(require("customer", "operator", CONVERSATION_SCOPE))]
"""Who may wait for a conversation's held and operator replies."""

LongPollPlace = Annotated[None, Depends(long_poll_place)]

"""API-key authentication: ``Authorization: Bearer KEY`` (what the openai client sends) or ``X-API-Key``.

Missing or unknown/revoked key: 401. A key of the wrong scope: 403. Keys are never logged; only
their public id appears in errors.
"""

from __future__ import annotations

from typing import Annotated, Callable

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from sopagent.keys import ApiKey, authenticate
from sopagent.server.service import ApiProblem, Service

bearer = HTTPBearer(auto_error=False, description="an API key from `sopagent keys create`")
header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key, as a header")


def require(*scopes: str) -> Callable[..., ApiKey]:
    """A dependency that returns the caller's key if it has one of ``scopes``."""

    def check(request: Request,
              credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
              api_key: Annotated[str | None, Depends(header_key)]) -> ApiKey:
        presented = credentials.credentials if credentials else api_key
        service: Service = request.app.state.service
        address = request.client.host if request.client else "unknown"
        service.limits.check_address(address)
        if not presented:
            service.limits.failed(address)
            raise ApiProblem(401, "no API key: send `Authorization: Bearer KEY` "
                                  "(create one with `sopagent keys create --scope customer`)")
        key = authenticate(service.store, presented)
        if key is None:
            service.limits.failed(address)
            raise ApiProblem(401, "unknown or revoked API key; create a new one with `sopagent keys create`")
        service.limits.hit(key.id)
        if key.scope not in scopes:
            raise ApiProblem(403, f"key {key.id} has scope {key.scope!r}; this endpoint needs "
                                  f"{' or '.join(scopes)} (create one with `sopagent keys create --scope {scopes[0]}`)")
        return key

    return check


CustomerKey = Annotated[ApiKey, Depends(require("customer"))]
OperatorKey = Annotated[ApiKey, Depends(require("operator"))]
AnyKey = Annotated[ApiKey, Depends(require("customer", "operator"))]

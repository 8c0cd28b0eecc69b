"""The web chat: a page (``/chat``) and an embeddable script (``/chat/widget.js``) served by sopagent itself.

No build step and nothing from another origin: the files in ``static/`` are sent as they are, each with a
strict Content-Security-Policy. The page talks to the customer API with a ``browser`` key from its URL
fragment and the conversation key each start returns.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, Request
from fastapi.responses import Response

from sopagent.server.service import Service

router = APIRouter(tags=["web chat"])
STATIC = files("sopagent.server") / "static"
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
               "base-uri 'none'; form-action 'none'; frame-ancestors {ancestors}")
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def _file(name: str, media_type: str, headers: dict[str, str]) -> Response:
    return Response((STATIC / name).read_bytes(), media_type=media_type, headers={**COMMON_HEADERS, **headers})


def _asset_headers() -> dict[str, str]:
    return {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'"}


@router.get("/chat", include_in_schema=False)
def chat_page(request: Request) -> Response:
    """The chat page; open it as ``/chat#key=BROWSER_KEY&policy=POLICY`` (or embed it with widget.js)."""
    service: Service = request.app.state.service
    policy = PAGE_POLICY.format(ancestors=service.config.frame_ancestors())
    return _file("chat.html", "text/html; charset=utf-8", {"Content-Security-Policy": policy})


@router.get("/chat/chat.js", include_in_schema=False)
def chat_script() -> Response:
    """The chat page's script."""
    return _file("chat.js", "text/javascript; charset=utf-8", _asset_headers())


@router.get("/chat/chat.css", include_in_schema=False)
def chat_style() -> Response:
    """The chat page's style sheet."""
    return _file("chat.css", "text/css; charset=utf-8", _asset_headers())


@router.get("/chat/widget.js", include_in_schema=False)
def widget_script() -> Response:
    """The script a bank's page includes to open the chat in a frame (loaded from other origins)."""
    return _file("widget.js", "text/javascript; charset=utf-8",
                 {**_asset_headers(), "Cross-Origin-Resource-Policy": "cross-origin"})

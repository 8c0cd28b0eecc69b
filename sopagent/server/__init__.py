"""The HTTP service for support-bot front ends: ``create_app`` builds it, ``sopagent serve`` runs it.

Imports are lazy so that ``sopagent`` commands that do not serve never load FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from sopagent.server.app import create_app

        return create_app
    if name == "ServeConfig":
        from sopagent.server.config import ServeConfig

        return ServeConfig
    raise AttributeError(name)

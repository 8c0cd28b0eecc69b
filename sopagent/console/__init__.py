"""The operator console: a Textual app on the audit store (``sopagent supervise``)."""

from sopagent.console.app import ConsoleApp, create_app

__all__ = ["ConsoleApp", "create_app"]

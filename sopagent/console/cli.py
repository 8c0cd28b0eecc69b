"""``sopagent supervise``: open the operator console on an audit store."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from sopagent.errors import StoreError
from sopagent.settings import Settings
from sopagent.store import Store


def open_existing_store(settings: Settings) -> Store:
    """Open an existing audit store; a SQLite file that does not exist is an error, not a new empty file."""
    chosen = settings.database_url()
    if chosen.startswith("sqlite:///") and ":memory:" not in chosen:
        path = Path(chosen.removeprefix("sqlite:///"))
        if not path.exists():
            raise StoreError(f"no audit store at {path}", fix="pass --db with the database agents write to "
                             "(sopagent chat --db ...), or set $SOPAGENT_DB")
    return Store(chosen)


def run_supervise(args: argparse.Namespace) -> int:
    """Open the console; returns the exit code."""
    from sopagent.console.app import create_app, default_model_factory

    settings = Settings.from_args(args)
    store = open_existing_store(settings)
    operator = args.operator or getpass.getuser()
    app = create_app(store, operator, model_factory=default_model_factory(settings),
                     policies_dir=args.policies, poll_interval=args.poll, settings=settings)
    app.run()
    return 0

"""A bank backend for fault tests whose account changes survive the process: a SQLite ledger file.

It is the demo bank with its actions recording every call and every change in the ledger, keyed by the
effect's idempotency key as a real bank's API would be, so a test can count what happened across
processes: ``changes(key)`` is how many times the change was made, ``calls(key)`` how many times the
action was called. ``SOPAGENT_TEST_CRASH_AFTER_BACKEND=1`` kills the process right after a change
(a runner dying between the backend call and the record of its outcome).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "policies"))

from northbank_backend import NorthbankDemo  # noqa: E402

from sopagent.effects import action  # noqa: E402

CRASH_ENV = "SOPAGENT_TEST_CRASH_AFTER_BACKEND"


@dataclass
class LedgerBank(NorthbankDemo):
    """The demo bank, with its card blocks and disputes kept in a ledger file."""

    ledger: str = ""

    @classmethod
    def at(cls, ledger: Path) -> "LedgerBank":
        """The demo bank writing to the ledger file ``ledger`` (created if missing)."""
        demo = NorthbankDemo.load()
        with sqlite3.connect(ledger) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT, action TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS changes (key TEXT PRIMARY KEY, action TEXT, result TEXT)")
        return cls(today=demo.today, customers=demo.customers, ledger=str(ledger))

    def _change(self, name: str, key: str, result: str) -> str:
        with sqlite3.connect(self.ledger) as conn:
            conn.execute("INSERT INTO calls VALUES (?, ?)", (key, name))
            done = conn.execute("SELECT result FROM changes WHERE key = ?", (key,)).fetchone()
            if done is not None:  # the same key again: the first result, no second change
                return json.loads(done[0])
            conn.execute("INSERT INTO changes VALUES (?, ?, ?)", (key, name, json.dumps(result)))
        if os.environ.get(CRASH_ENV) == "1":
            os._exit(9)
        return result

    @action(irreversible=True)
    def block_card(self, customer_id: str, idempotency_key: str = "") -> dt.date:
        """Block the card (in the ledger); return the replacement's delivery date."""
        delivered = self._change("block_card", idempotency_key, (self.today + dt.timedelta(days=5)).isoformat())
        return dt.date.fromisoformat(delivered)

    @action
    def open_dispute(self, customer_id: str, payment_id: str, idempotency_key: str = "") -> str:
        """Open a dispute (in the ledger); return its reference."""
        with sqlite3.connect(self.ledger) as conn:
            number = conn.execute("SELECT count(*) FROM changes").fetchone()[0] + 200001
        return self._change("open_dispute", idempotency_key, f"DSP-{number:06d}")

    @action
    def request_supervisor_review(self, customer_id: str, fee_type: str, amount: Decimal,
                                  idempotency_key: str = "") -> str:
        """Queue a supervisor review (in the ledger); return its reference."""
        return self._change("request_supervisor_review", idempotency_key, "REV-300001")

    @action
    def log_complaint(self, customer_id: str | None, topic: str, idempotency_key: str = "") -> str:
        """Record a complaint (in the ledger); return its reference."""
        return self._change("log_complaint", idempotency_key, "CMP-400001")


def changes(ledger: Path, name: str | None = None) -> int:
    """How many account changes the ledger holds (of one action, or of all)."""
    with sqlite3.connect(ledger) as conn:
        if name is None:
            return conn.execute("SELECT count(*) FROM changes").fetchone()[0]
        return conn.execute("SELECT count(*) FROM changes WHERE action = ?", (name,)).fetchone()[0]


def calls(ledger: Path, name: str) -> int:
    """How many times an action was called (a retry with the same key counts)."""
    with sqlite3.connect(ledger) as conn:
        return conn.execute("SELECT count(*) FROM calls WHERE action = ?", (name,)).fetchone()[0]

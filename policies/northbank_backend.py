"""Demo backend for the card_services policy: reads the seeded JSON in demo_data/.

A real deployment passes its own object with the same methods (``Agent(..., tools=MyBank())``).
Methods marked ``@action`` change the customer's account: a step plans them on an option and the
engine runs them once, after the decision is recorded. Changes (blocks, refunds, disputes) live in
memory only; each action remembers its idempotency key, so a repeated call returns the first result.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sopagent.effects import IdempotentBackend, action

DEMO_FILE = Path(__file__).parent / "demo_data" / "northbank.json"


@dataclass
class Payment:
    """A card payment."""

    id: str
    date: dt.date
    amount: Decimal
    merchant: str


@dataclass
class Customer:
    """A card holder as the bank knows them."""

    id: str
    name: str
    card_last4: str
    date_of_birth: dt.date
    account_opened: dt.date
    card_status: str
    transactions: list[Payment]
    fees: list[dict[str, Any]]
    refunds: list[dict[str, Any]]


@dataclass
class NorthbankDemo(IdempotentBackend):
    """Look-ups and actions of the demo bank."""

    today: dt.date
    customers: dict[str, Customer]
    _refs: itertools.count = field(default_factory=lambda: itertools.count(100001))
    supervisor_reviews: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path = DEMO_FILE) -> "NorthbankDemo":
        """Read the seeded demo database."""
        data = json.loads(path.read_text(encoding="utf-8"))
        customers = {}
        for raw in data["customers"]:
            customers[raw["id"]] = Customer(
                id=raw["id"], name=raw["name"], card_last4=raw["card_last4"],
                date_of_birth=dt.date.fromisoformat(raw["date_of_birth"]),
                account_opened=dt.date.fromisoformat(raw["account_opened"]), card_status=raw["card_status"],
                transactions=[Payment(t["id"], dt.date.fromisoformat(t["date"]), Decimal(t["amount"]), t["merchant"])
                              for t in raw["transactions"]],
                fees=[{**f, "date": dt.date.fromisoformat(f["date"]), "amount": Decimal(f["amount"])} for f in raw["fees"]],
                refunds=[{**r, "date": dt.date.fromisoformat(r["date"])} for r in raw["refunds"]])
        return cls(today=dt.date.fromisoformat(data["today"]), customers=customers)

    def verify(self, card_last4: str, date_of_birth: dt.date) -> Customer | None:
        """The customer whose card and birth date both match, or None."""
        for customer in self.customers.values():
            if customer.card_last4 == card_last4 and customer.date_of_birth == date_of_birth:
                return customer
        return None

    @action(irreversible=True)
    def block_card(self, customer_id: str, idempotency_key: str = "") -> dt.date:
        """Block the card and order a replacement; return its delivery date."""
        def block() -> dt.date:
            self.customers[customer_id].card_status = "blocked"
            return self.today + dt.timedelta(days=5)

        return self.once(idempotency_key, block)

    def find_payment(self, customer_id: str, date: dt.date | None, amount: Decimal | None,
                     merchant: str | None) -> Payment | None:
        """The customer's payment matching every detail given (at least two details needed)."""
        given = [value is not None for value in (date, amount, merchant)]
        if sum(given) < 2:
            return None
        for payment in self.customers[customer_id].transactions:
            if date is not None and payment.date != date:
                continue
            if amount is not None and payment.amount != amount:
                continue
            if merchant is not None and merchant.lower() not in payment.merchant.lower():
                continue
            return payment
        return None

    def account_age_days(self, customer_id: str) -> int:
        """Days since the account was opened."""
        return (self.today - self.customers[customer_id].account_opened).days

    @action
    def open_dispute(self, customer_id: str, payment_id: str, idempotency_key: str = "") -> str:
        """Open a dispute case on one of the customer's payments; return its reference."""
        if not any(p.id == payment_id for p in self.customers[customer_id].transactions):
            raise ValueError(f"payment {payment_id} is not one of customer {customer_id}'s")
        return self.once(idempotency_key, lambda: f"DSP-{next(self._refs):06d}")

    def latest_fee(self, customer_id: str, fee_type: str) -> dict[str, Any] | None:
        """The most recent fee of this type in the last 90 days."""
        fees = [f for f in self.customers[customer_id].fees
                if f["type"] == fee_type and (self.today - f["date"]).days <= 90]
        return max(fees, key=lambda f: f["date"]) if fees else None

    def last_refund_date(self, customer_id: str) -> dt.date | None:
        """Date of the most recent fee refund, if any."""
        refunds = self.customers[customer_id].refunds
        return max(r["date"] for r in refunds) if refunds else None

    @action
    def refund_fee(self, customer_id: str, fee_type: str, amount: Decimal, idempotency_key: str = "") -> Decimal:
        """Refund a fee; return the amount refunded."""
        def refund() -> Decimal:
            self.customers[customer_id].refunds.append({"date": self.today, "type": fee_type, "amount": amount})
            return amount

        return self.once(idempotency_key, refund)

    @action
    def request_supervisor_review(self, customer_id: str, fee_type: str, amount: Decimal,
                                  idempotency_key: str = "") -> str:
        """Put a fee refund above the limit in a supervisor's queue; return the review's reference."""
        def request() -> str:
            reference = f"REV-{next(self._refs):06d}"
            self.supervisor_reviews.append({"reference": reference, "customer_id": customer_id,
                                            "fee_type": fee_type, "amount": amount})
            return reference

        return self.once(idempotency_key, request)

    @action
    def log_complaint(self, customer_id: str | None, topic: str, idempotency_key: str = "") -> str:
        """Record a complaint; return its reference."""
        return self.once(idempotency_key, lambda: f"CMP-{next(self._refs):06d}")

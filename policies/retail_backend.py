"""Demo backend for the retail_orders policy: reads the seeded JSON in demo_data/.

A real deployment passes its own object with the same methods (``Agent(..., tools=MyShop())``).
Methods marked ``@action`` change the customer's account: a step plans them on an option and the
engine runs them once, after the decision is recorded. Changes (cancellations, return requests) live
in memory only; each action remembers its idempotency key, so a repeated call returns the first result.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from sopagent.effects import IdempotentBackend, action

DEMO_FILE = Path(__file__).parent / "demo_data" / "retail.json"


@dataclass
class PaymentMethod:
    """A payment method on a user's profile: gift card, credit card or PayPal account."""

    id: str
    type: str
    """``gift_card``, ``credit_card`` or ``paypal``."""
    last_four: str | None = None
    balance: Decimal | None = None

    @property
    def description(self) -> str:
        """How the method is named to the customer (matches the catalog's payment_method pattern)."""
        if self.type == "gift_card":
            return "gift card"
        if self.type == "paypal":
            return "PayPal account"
        return f"credit card ending {self.last_four}"

    @property
    def refund_timing(self) -> str:
        """When a refund to this method arrives (catalog enum value)."""
        return "immediately" if self.type == "gift_card" else "within 5 to 7 business days"


@dataclass
class Item:
    """One ordered item (a variant of a product)."""

    name: str
    item_id: str
    price: Decimal


@dataclass
class Order:
    """An order and what has been done to it."""

    order_id: str
    user_id: str
    status: str
    """pending, processed, delivered, cancelled, or return requested after a return."""
    placed: dt.date
    payment_method_id: str
    items: list[Item]
    cancel_reason: str | None = None
    refund_method_id: str | None = None

    @property
    def total(self) -> Decimal:
        """Sum of the item prices."""
        return sum((item.price for item in self.items), Decimal("0.00"))

    @property
    def item_names(self) -> str:
        """The item names, comma separated (matches the catalog's items pattern)."""
        return ", ".join(item.name for item in self.items)


@dataclass
class User:
    """A shop customer as the shop knows them."""

    user_id: str
    name: str
    zip: str
    email: str
    payment_methods: dict[str, PaymentMethod]
    order_ids: list[str]


@dataclass
class RetailDemo(IdempotentBackend):
    """Look-ups and actions of the demo shop."""

    today: dt.date
    users: dict[str, User]
    orders: dict[str, Order]

    @classmethod
    def load(cls, path: Path = DEMO_FILE) -> "RetailDemo":
        """Read the seeded demo database."""
        data = json.loads(path.read_text(encoding="utf-8"))
        users: dict[str, User] = {}
        orders: dict[str, Order] = {}
        for raw in data["users"]:
            methods = {
                m["id"]: PaymentMethod(id=m["id"], type=m["type"], last_four=m.get("last_four"),
                                       balance=Decimal(m["balance"]) if "balance" in m else None)
                for m in raw["payment_methods"]}
            for o in raw["orders"]:
                orders[o["order_id"]] = Order(
                    order_id=o["order_id"], user_id=raw["user_id"], status=o["status"],
                    placed=dt.date.fromisoformat(o["placed"]), payment_method_id=o["payment_method_id"],
                    items=[Item(i["name"], i["item_id"], Decimal(i["price"])) for i in o["items"]])
            users[raw["user_id"]] = User(
                user_id=raw["user_id"], name=raw["name"], zip=raw["zip"], email=raw["email"],
                payment_methods=methods, order_ids=[o["order_id"] for o in raw["orders"]])
        return cls(today=dt.date.fromisoformat(data["today"]), users=users, orders=orders)

    # --- authentication ----------------------------------------------------------------------

    def find_user_by_email(self, email: str) -> User | None:
        """The user with this email address (case-insensitive), or None."""
        wanted = email.strip().lower()
        return next((u for u in self.users.values() if u.email.lower() == wanted), None)

    def find_user_by_name_zip(self, name: str, zip_code: str) -> User | None:
        """The user with this full name (case and spacing ignored) and zip code, or None."""
        wanted = " ".join(name.split()).lower()
        return next((u for u in self.users.values()
                     if " ".join(u.name.split()).lower() == wanted and u.zip == zip_code.strip()), None)

    # --- look-ups ----------------------------------------------------------------------------

    def user_orders(self, user_id: str) -> list[Order]:
        """The user's orders, in the order they are stored."""
        return [self.orders[order_id] for order_id in self.users[user_id].order_ids]

    def order_of_user(self, user_id: str, order_id: str) -> Order | None:
        """The order if it exists *and* belongs to this user (one user per conversation), else None."""
        order = self.orders.get(order_id)
        return order if order is not None and order.user_id == user_id else None

    def orders_summary(self, user_id: str) -> str:
        """``#W1234567 (pending), #W7654321 (delivered)``: the user's order ids with their status."""
        return ", ".join(f"{o.order_id} ({o.status})" for o in self.user_orders(user_id))

    def payment_method(self, user_id: str, payment_method_id: str) -> PaymentMethod:
        """A payment method of the user."""
        return self.users[user_id].payment_methods[payment_method_id]

    def gift_card(self, user_id: str) -> PaymentMethod | None:
        """The user's existing gift card, if they have one."""
        return next((m for m in self.users[user_id].payment_methods.values() if m.type == "gift_card"), None)

    # --- actions (in memory) -------------------------------------------------------------------

    @action(irreversible=True)
    def cancel_order(self, user_id: str, order_id: str, reason: str, idempotency_key: str = "") -> PaymentMethod:
        """Cancel a pending order; refund the total to the original payment method, which is returned."""
        return self.once(idempotency_key, lambda: self._cancel(user_id, order_id, reason))

    def _cancel(self, user_id: str, order_id: str, reason: str) -> PaymentMethod:
        order = self.order_of_user(user_id, order_id)
        if order is None or order.status != "pending":
            raise ValueError(f"order {order_id} cannot be cancelled")
        if reason not in ("no longer needed", "ordered by mistake"):
            raise ValueError(f"cancellation reason {reason!r} is not accepted")
        method = self.payment_method(user_id, order.payment_method_id)
        order.status = "cancelled"
        order.cancel_reason = reason
        order.refund_method_id = method.id
        if method.type == "gift_card" and method.balance is not None:
            method.balance += order.total
        return method

    @action
    def request_return(self, user_id: str, order_id: str, refund_method_id: str,
                       idempotency_key: str = "") -> PaymentMethod:
        """Request the return of every item of a delivered order; the refund goes to ``refund_method_id``."""
        return self.once(idempotency_key, lambda: self._return(user_id, order_id, refund_method_id))

    def _return(self, user_id: str, order_id: str, refund_method_id: str) -> PaymentMethod:
        order = self.order_of_user(user_id, order_id)
        if order is None or order.status != "delivered":
            raise ValueError(f"order {order_id} cannot be returned")
        method = self.payment_method(user_id, refund_method_id)
        if method.id != order.payment_method_id and method.type != "gift_card":
            raise ValueError("a refund goes to the original payment method or an existing gift card")
        order.status = "return requested"
        order.refund_method_id = method.id
        return method

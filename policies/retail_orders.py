"""Online retail orders: an online shop's order SOP (after the tau2-bench retail policy, MIT).

Rules (from the shop's procedures):
- Authenticate first: find the user by email, or by full name + zip code, before any order
  information or action. A user id alone is not enough, even when the customer gives one.
- One user per conversation: only the authenticated user's orders are looked up or changed.
- Order status: after authentication, tell the status and contents of one of the user's orders.
- Cancel: only a pending order, and only for the reason 'no longer needed' or 'ordered by
  mistake'. The total is refunded to the original payment method (a gift card at once, otherwise
  in 5 to 7 business days).
- Return: only a delivered order. The refund goes to the original payment method or to an
  existing gift card; the customer then gets an email on how to send the items back.
- Before any change (cancel, return) the reply lists the order id, the items, the amount and the
  refund method, and the change is made only after an explicit yes (a cancellation, which cannot be
  undone, only on a yes read with at least the policy's action_confidence); an answer that is not
  a clear yes or no is asked again.
- A request outside these actions goes to a human agent; the customer can ask for a human at any
  step; three failed authentication attempts hand over too.

Limits of this example (handed to a human agent instead):
- modifying a pending order (items, shipping address, payment method), exchanging delivered
  items, and changing the default address;
- returning only some items of an order: a return here always covers every item of the order.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from retail_backend import Order, RetailDemo
from sopagent import END, Confirmation, Facts, OneToken, Option, Policy, Turn, say

policy = Policy(
    name="retail_orders",
    version="1.0",
    catalog="../catalogs/retail_orders.yaml",
    start="welcome",
    fallback="handoff_to_human",
    holding="holding_for_review",
    confidence_threshold=0.0,
    action_confidence=0.65,
    description=("an online shop's order service: order status, cancelling pending orders, returning "
                 "delivered orders, for the customer's own account."),
    tools=RetailDemo.load,
)

MAX_AUTH_ATTEMPTS = 3
ORDER_ID_PATTERN = r"^#W[0-9]{7}$"
CANCEL_REASONS = ("no longer needed", "ordered by mistake")

Intent = Literal["cancel_order", "return_order", "order_status", "modify_order", "exchange_items",
                 "change_address", "talk_to_human", "other_question", "no_more_requests"]
HANDED_TO_HUMAN = {"modify_order", "exchange_items", "change_address"}
FIRST_QUESTION = {"cancel_order": "ask_cancel_order", "return_order": "ask_return_order",
                  "order_status": "ask_status_order"}
FIRST_STEP = {"cancel_order": "cancel_order", "return_order": "return_order", "order_status": "order_status"}
ORDER_STATUS_NEEDED = {"cancel_order": "pending", "return_order": "delivered"}
"""Only a pending order can be cancelled and only a delivered one returned."""
NOT_POSSIBLE = {"cancel_order": "cancel_not_possible", "return_order": "return_not_possible"}
REQUEST_FACTS = ("order_id", "reason", "refund_to", "refund_method_id", "answer")
"""Facts of one request, forgotten when the next request starts."""


def asks_for_human_field() -> Any:
    """The field every step reads last: the customer can always ask for a human."""
    return Field("no", description="yes if the customer wants a human agent instead of this chat, no if they only talk about their order")


def order_id_field(what: str) -> Any:
    """An optional order id, constrained to the shop's order id format."""
    return Field(None, pattern=ORDER_ID_PATTERN,
                 description=f"the id of the order {what}, written like #W1234567")


class ShopFacts(Facts):
    """Facts of every step end with ``asks_for_human = asks_for_human_field()``, declared last so it is read last."""


class Request(ShopFacts):
    # talk_to_human is an intent of its own: without it the model tends to read every unlisted
    # request (other_question) as a request for a human.
    intent: Intent = Field(description=(
        "the request in the customer's latest message: cancel_order (cancel an order), return_order (send "
        "back items they received), order_status (asks where an order is, its status, or what is in it), "
        "modify_order (change items, shipping address or payment of an order), exchange_items (swap received "
        "items for another size or colour), change_address (change their default address), talk_to_human "
        "(asks for a human or a real person), other_question (a greeting, or anything else), "
        "no_more_requests (they say no, that is all, or thanks)"))
    asks_for_human: Literal["no", "yes"] = asks_for_human_field()


class Identity(ShopFacts):
    # Name and zip first: read after a name, an email field tends to be filled with a made-up address
    # built from the name; a made-up zip code never matches.
    full_name: str | None = Field(None, pattern=r"^[A-Za-z][A-Za-z'-]*( [A-Za-z][A-Za-z'-]*){1,3}$",
                                  description="the customer's first and last name as they wrote them")
    zip_code: str | None = Field(None, pattern=r"^[0-9]{5}$", description="the 5-digit zip code the customer wrote")
    email: str | None = Field(None, pattern=r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$",
                              description="the email address exactly as the customer wrote it; null if the message has no @")
    asks_for_human: Literal["no", "yes"] = asks_for_human_field()


class CancelRequest(ShopFacts):
    order_id: str | None = order_id_field("to cancel")
    reason: Annotated[Literal["no longer needed", "ordered by mistake", "other reason"] | None, OneToken(
        question="What reason for cancelling does the latest message give?",
        not_said="the message gives no reason for cancelling",
        options={"no longer needed": "the customer no longer needs or wants the item",
                 "ordered by mistake": "the customer ordered it by mistake or by accident",
                 "other reason": "some other reason (a better price elsewhere, paying differently, a late delivery)"},
    )] = Field(None, description=("the reason the customer gives for cancelling: no longer needed, ordered by "
                                  "mistake, or other reason (any other reason); null if the latest message gives "
                                  "no reason"))
    asks_for_human: Literal["no", "yes"] = asks_for_human_field()


class ReturnRequest(ShopFacts):
    order_id: str | None = order_id_field("to return")
    refund_to: Annotated[Literal["original payment method", "gift card"] | None, OneToken(
        question="Where does the latest message say the refund should go?",
        not_said="the message does not say where the refund should go",
        options={"original payment method": "back to the original payment method (the card or account the "
                                            "customer paid with)",
                 "gift card": "onto a gift card"},
    )] = Field(None, description=("where the customer says the refund should go: original payment method, or "
                                  "gift card; null if the latest message does not say"))
    asks_for_human: Literal["no", "yes"] = asks_for_human_field()


class StatusRequest(ShopFacts):
    order_id: str | None = order_id_field("to look up")
    asks_for_human: Literal["no", "yes"] = asks_for_human_field()


class ShopConfirmation(Confirmation):
    """The customer's answer to "shall I go ahead?" (yes, no, unclear, human), read with probabilities."""

    options = {**Confirmation.options,
               "no": "no: refuses, changes their mind, or wants something different from what was listed"}

    @property
    def asks_for_human(self) -> str:
        """As the other facts name it: ``yes`` when the customer asks for a person."""
        return "yes" if self.label == "human" else "no"


@policy.guard
def human_on_request(turn: Turn[ShopFacts, RetailDemo]) -> list[Option] | None:
    """Any step: a customer who asks for a person gets one."""
    if getattr(turn.facts, "asks_for_human", "no") == "yes":
        return [say("handoff_to_human", next=END)]
    return None


def route(turn: Turn[Request, RetailDemo]) -> list[Option]:
    """Send a request where it belongs, authenticating first when it touches the account."""
    intent = turn.facts.intent
    for key in REQUEST_FACTS:
        turn.known.pop(key, None)
    if intent in HANDED_TO_HUMAN:  # a limit of this example: a human agent handles these
        return [say("handoff_to_human", next=END)]
    if intent == "talk_to_human":
        return [say("handoff_to_human", next=END)]
    if intent in FIRST_STEP:
        if "user_id" not in turn.known:
            turn.known["pending_intent"] = intent
            return [say("ask_authentication", next="authenticate")]
        return first_question(turn, intent)
    if intent == "no_more_requests":
        return [say("goodbye", next=END)]
    return [
        say("ask_how_to_help", next="welcome", hint="a greeting, or the customer's need is unclear"),
        say("handoff_to_human", next=END, hint="the customer asks for something this service does not do"),
    ]


def first_question(turn: Turn[Any, RetailDemo], intent: str) -> list[Option]:
    """The first question of an authenticated request, listing the user's orders."""
    orders = turn.tools.orders_summary(turn.known["user_id"])
    return [say(FIRST_QUESTION[intent], next=FIRST_STEP[intent], orders=orders)]


def order_not_found(turn: Turn[Any, RetailDemo], order_id: str, step: str) -> list[Option]:
    """The order id is not one of this user's orders: forget it and ask again."""
    turn.known.pop("order_id", None)
    orders = turn.tools.orders_summary(turn.known["user_id"])
    return [say("order_not_found", next=step, order_id=order_id, orders=orders)]


def look_up_order(turn: Turn[Any, RetailDemo], step: str) -> Order | list[Option]:
    """The user's order named in the conversation, if it may be handled at ``step``; else the reply to send."""
    order_id = turn.known.get("order_id")
    if order_id is None:
        return first_question(turn, step)
    order = turn.tools.order_of_user(turn.known["user_id"], order_id)
    if order is None:
        return order_not_found(turn, order_id, step)
    if order.status != ORDER_STATUS_NEEDED[step]:
        return [say(NOT_POSSIBLE[step], next="anything_else", order_id=order_id, status=order.status)]
    return order


@policy.step(facts=Request)
def welcome(turn: Turn[Request, RetailDemo]) -> list[Option]:
    """The customer's first message: what do they want?"""
    if turn.facts.intent == "no_more_requests":
        return [say("ask_how_to_help", next="welcome")]
    return route(turn)


@policy.step(facts=Request)
def anything_else(turn: Turn[Request, RetailDemo]) -> list[Option]:
    """After a request is done: another one, or goodbye."""
    return route(turn)


@policy.step(facts=Identity)
def authenticate(turn: Turn[Identity, RetailDemo]) -> list[Option]:
    """Find the user by email, or by full name + zip code; a user id is never enough."""
    email, name, zip_code = (turn.known.get(k) for k in ("email", "full_name", "zip_code"))
    user = turn.tools.find_user_by_email(email) if email else None
    if user is None and name and zip_code:
        user = turn.tools.find_user_by_name_zip(name, zip_code)
    if user is not None:
        turn.known["user_id"] = user.user_id
        return first_question(turn, turn.known.pop("pending_intent", "order_status"))
    attempts = turn.known.get("auth_attempts", 0) + 1
    turn.known["auth_attempts"] = attempts
    if attempts >= MAX_AUTH_ATTEMPTS:
        return [say("handoff_to_human", next=END)]
    turn.known.pop("email", None)  # an email that did not match is forgotten, so a correction is read fresh
    if bool(name) != bool(zip_code) and not turn.facts.email:  # half of the pair: keep it, ask for the rest
        return [say("ask_name_and_zip", next="authenticate")]
    turn.known.pop("full_name", None)
    turn.known.pop("zip_code", None)
    return [say("authentication_failed", next="authenticate")]


@policy.step(facts=CancelRequest)
def cancel_order(turn: Turn[CancelRequest, RetailDemo]) -> list[Option]:
    """Only a pending order of this user, only for an accepted reason; then list and ask for a yes."""
    order = look_up_order(turn, "cancel_order")
    if isinstance(order, list):
        return order
    user_id, order_id, reason = turn.known["user_id"], turn.known["order_id"], turn.known.get("reason")
    if reason is None:
        return [say("ask_cancel_reason", next="cancel_order", order_id=order_id)]
    if reason not in CANCEL_REASONS:
        return [say("cancel_reason_not_accepted", next="anything_else", order_id=order_id)]
    method = turn.tools.payment_method(user_id, order.payment_method_id)
    return [say("confirm_cancel", next="confirm_cancel", order_id=order_id, items=order.item_names,
                total=order.total, reason=reason, payment_method=method.description,
                refund_timing=method.refund_timing)]


@policy.step(facts=ShopConfirmation)
def confirm_cancel(turn: Turn[ShopConfirmation, RetailDemo]) -> list[Option]:
    """Cancel only after a clear yes; an answer that is not clearly yes or no is asked again."""
    user_id, order_id = turn.known["user_id"], turn.known["order_id"]
    order = turn.tools.order_of_user(user_id, order_id)
    method = turn.tools.payment_method(user_id, order.payment_method_id)
    if turn.confirmed():
        cancel = turn.tools.cancel_order.plan(user_id, order_id, turn.known["reason"])
        return [say("order_cancelled", next="anything_else", do=[cancel], order_id=order_id, total=order.total,
                    payment_method=method.description, refund_timing=method.refund_timing)]
    if turn.facts.label == "no":
        return [say("cancel_not_done", next="anything_else", order_id=order_id)]
    return [say("confirm_cancel", next="confirm_cancel", order_id=order_id, items=order.item_names,
                total=order.total, reason=turn.known["reason"], payment_method=method.description,
                refund_timing=method.refund_timing)]


@policy.step(facts=ReturnRequest)
def return_order(turn: Turn[ReturnRequest, RetailDemo]) -> list[Option]:
    """Only a delivered order of this user; refund to the original payment method or an existing gift card."""
    order = look_up_order(turn, "return_order")
    if isinstance(order, list):
        return order
    user_id, order_id, refund_to = turn.known["user_id"], turn.known["order_id"], turn.known.get("refund_to")
    original = turn.tools.payment_method(user_id, order.payment_method_id)
    gift_card = turn.tools.gift_card(user_id)
    confirm = "confirm_return"
    if refund_to is None and gift_card is not None and original.type != "gift_card":
        return [say("ask_refund_method", next="return_order", order_id=order_id, payment_method=original.description)]
    if refund_to == "gift card" and gift_card is not None:
        refund = gift_card
    else:
        if refund_to == "gift card":  # no gift card on the account: only the original method is possible
            confirm = "confirm_return_no_gift_card"
        refund = original
    turn.known["refund_method_id"] = refund.id
    details = dict(order_id=order_id, items=order.item_names, total=order.total, refund_method=refund.description)
    if confirm == "confirm_return_no_gift_card":
        return [say("confirm_return_no_gift_card", next="confirm_return", **details)]
    return [say("confirm_return", next="confirm_return", **details)]


@policy.step(facts=ShopConfirmation)
def confirm_return(turn: Turn[ShopConfirmation, RetailDemo]) -> list[Option]:
    """Request the return only after a clear yes; an answer that is not clearly yes or no is asked again."""
    user_id, order_id = turn.known["user_id"], turn.known["order_id"]
    order = turn.tools.order_of_user(user_id, order_id)
    refund = turn.tools.payment_method(user_id, turn.known["refund_method_id"])
    if turn.confirmed():
        request = turn.tools.request_return.plan(user_id, order_id, refund.id)
        return [say("return_requested", next="anything_else", do=[request], order_id=order_id, total=order.total,
                    refund_method=refund.description)]
    if turn.facts.label == "no":
        return [say("return_not_done", next="anything_else", order_id=order_id)]
    return [say("confirm_return", next="confirm_return", order_id=order_id, items=order.item_names,
                total=order.total, refund_method=refund.description)]


@policy.step(facts=StatusRequest)
def order_status(turn: Turn[StatusRequest, RetailDemo]) -> list[Option]:
    """Status and contents of one of this user's orders."""
    user_id, order_id = turn.known["user_id"], turn.known.get("order_id")
    if order_id is None:
        return first_question(turn, "order_status")
    order = turn.tools.order_of_user(user_id, order_id)
    if order is None:
        return order_not_found(turn, order_id, "order_status")
    return [say("order_status_info", next="anything_else", order_id=order_id, placed=order.placed,
                status=order.status, items=order.item_names, total=order.total)]

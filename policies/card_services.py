"""Northbank card services: a retail bank's card SOP.

Rules (from the bank's procedures):
- Verify identity (card's last four digits + date of birth) before any account detail or action.
  Only what the customer wrote counts: a date that reads two ways (03/04/1990) is asked again with
  the month as a word, never guessed.
- Lost or stolen card: confirm, then block it and send a replacement. Blocking cannot be undone, so
  it needs a clear yes (read with a probability of at least the policy's action_confidence); a
  hesitant, conditional or questioning answer is asked again.
- Dispute a card payment: collect date, amount, merchant. Provisional credit: up to EUR 100 always;
  up to EUR 500 when the account is at least 180 days old; above EUR 500 only for accounts at least
  a year old, and then a supervisor approves before the customer is told. Otherwise no credit.
- Fee refund: at most EUR 50, at most once per 12 months; otherwise explain, or refer to a
  supervisor when the customer insists.
- A complaint is acknowledged with a reference number (logged only when the message is a complaint).
- The customer can reach a human at any step; three failed identity checks hand over too.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from northbank_backend import NorthbankDemo
from sopagent import END, Confirmation, Facts, Option, Policy, Turn, say

policy = Policy(
    name="card_services",
    version="1.0",
    catalog="../catalogs/card_services.yaml",
    start="welcome",
    fallback="handoff_to_human",
    holding="holding_for_review",
    confidence_threshold=0.0,
    action_confidence=0.65,
    description="Northbank card services: lost or stolen cards, disputed card payments, fee refunds, complaints.",
    tools=NorthbankDemo.load,
)

FEE_REFUND_LIMIT = Decimal("50.00")
MAX_IDENTITY_ATTEMPTS = 3
"""Wrong or missing answers in one conversation before a person takes over."""
MAX_CARD_FAILURES = 5
"""Wrong identity answers for one card, in any conversation within the policy's lockout window (24 h),
after which that card's identity check is locked: a new conversation does not start the count again."""

Intent = Literal["lost_or_stolen_card", "dispute_payment", "fee_refund", "complaint", "nothing_else",
                 "something_else"]
NEEDS_VERIFICATION = {"lost_or_stolen_card", "dispute_payment", "fee_refund"}


def handoff_field() -> Any:
    """The field every step reads last: the customer can always ask for a human.

    A named pair of values reads far more reliably on a small model than yes/no.
    """
    return Field("not_requested", description="whether the customer asks to be transferred to a human person")


class BankFacts(Facts):
    """Facts of every step end with ``handoff = handoff_field()``, declared last so it is read last."""


class Request(BankFacts):
    intent: Intent = Field(description=(
        "what the customer wants: lost_or_stolen_card, dispute_payment (a card payment they do not "
        "recognise or want to contest), fee_refund, complaint, nothing_else (they are done), "
        "something_else"))
    handoff: Literal["not_requested", "requested"] = handoff_field()


class Identity(BankFacts):
    card_last4: str | None = Field(None, pattern=r"^[0-9]{4}$", description="the last four digits of the card")
    date_of_birth: dt.date | None = Field(None, description="the customer's date of birth as YYYY-MM-DD")
    handoff: Literal["not_requested", "requested"] = handoff_field()


class BankConfirmation(Confirmation):
    """The customer's answer to "shall I block it?" (yes, no, unclear, human), read with probabilities."""

    @property
    def handoff(self) -> str:
        """As the other facts name it: ``requested`` when the customer asks for a person."""
        return "requested" if self.label == "human" else "not_requested"


class PaymentDetails(BankFacts):
    payment_date: dt.date | None = Field(None, description="date of the disputed payment as YYYY-MM-DD (the year is 2026 unless said)")
    amount: float | None = Field(None, description="amount of the disputed payment in euros")
    merchant: str | None = Field(None, pattern=r"^[A-Za-z0-9 &'.-]{2,40}$", description="the shop or company paid")
    handoff: Literal["not_requested", "requested"] = handoff_field()


class FeeChoice(BankFacts):
    fee_type: Literal["late payment", "overlimit", "foreign transaction", "annual"] | None = Field(
        None, description="which fee the customer wants refunded")
    handoff: Literal["not_requested", "requested"] = handoff_field()


@policy.guard
def human_on_request(turn: Turn[BankFacts, NorthbankDemo]) -> list[Option] | None:
    """Any step: a customer who asks for a person gets one."""
    if getattr(turn.facts, "handoff", None) == "requested":
        return [say("handoff_to_human", next=END)]
    return None


COMPLAINS = "Does the customer's latest message make a complaint about the bank or its service?"
"""Asked before a complaint is logged: the request's JSON reading also reads requests for a person
and things a card service does not do as complaints (BENCHMARKS.md, "Routing checks")."""


def route(turn: Turn[Request, NorthbankDemo]) -> list[Option]:
    """Send a request where it belongs, verifying identity first when it touches the account."""
    intent = turn.facts.intent
    if intent in NEEDS_VERIFICATION and "customer_id" not in turn.known:
        turn.known["pending_intent"] = intent
        return [say("ask_identity", next="verify_identity")]
    if intent in NEEDS_VERIFICATION:
        return continue_with(turn, intent)
    if intent == "complaint" and turn.check(COMPLAINS, at_least=0.65):
        complaint = turn.tools.log_complaint.plan(turn.known.get("customer_id"), "general")
        return [say("complaint_acknowledged", next="anything_else", do=[complaint], reference=complaint.result)]
    if intent == "nothing_else":
        return [say("goodbye", next=END)]
    return [
        say("ask_how_to_help", next="welcome", hint="the customer's need is unclear"),
        say("out_of_scope", next="welcome", hint="the customer asks for something a card service does not do"),
    ]


def continue_with(turn: Turn[Request, NorthbankDemo] | Turn[Identity, NorthbankDemo], intent: str) -> list[Option]:
    """The first question of a verified request."""
    if intent == "lost_or_stolen_card":
        customer = turn.tools.customers[turn.known["customer_id"]]
        return [say("confirm_block", next="confirm_block", last4=customer.card_last4)]
    if intent == "dispute_payment":
        return [say("ask_dispute_details", next="dispute_details")]
    return [say("ask_fee_type", next="fee_refund")]


@policy.step(facts=Request)
def welcome(turn: Turn[Request, NorthbankDemo]) -> list[Option]:
    """The customer's first message: what do they want?"""
    if turn.facts.intent == "nothing_else":
        return [say("ask_how_to_help", next="welcome")]
    return route(turn)


@policy.step(facts=Request)
def anything_else(turn: Turn[Request, NorthbankDemo]) -> list[Option]:
    """After a request is done: another one, or goodbye."""
    return route(turn)


@policy.step(facts=Identity)
def verify_identity(turn: Turn[Identity, NorthbankDemo]) -> list[Option]:
    """Card's last four digits and date of birth must match the same customer."""
    last4, born = turn.known.get("card_last4"), turn.known.get("date_of_birth")
    if born is None and turn.ungrounded.get("date_of_birth", {}).get("why") == "ambiguous":
        return [say("ask_date_written_out", next="verify_identity")]  # 03/04/1990 reads two ways: never guess
    if last4 and turn.recent_failures("identity", last4) >= MAX_CARD_FAILURES:
        return [say("handoff_to_human", next=END)]  # locked: guessing across conversations ends here
    customer = turn.tools.verify(last4, dt.date.fromisoformat(born)) if last4 and born else None
    if customer is not None:
        turn.known["customer_id"] = customer.id
        return continue_with(turn, turn.known.get("pending_intent", "lost_or_stolen_card"))
    attempts = turn.known.get("identity_attempts", 0) + 1
    turn.known["identity_attempts"] = attempts
    if last4 and born:  # a full pair that did not match: forget it, so a corrected pair is read fresh
        turn.record_failure("identity", last4)
        turn.known.pop("card_last4")
        turn.known.pop("date_of_birth")
    if attempts >= MAX_IDENTITY_ATTEMPTS:
        return [say("handoff_to_human", next=END)]
    return [say("identity_retry", next="verify_identity")]


@policy.step(facts=BankConfirmation)
def confirm_block(turn: Turn[BankConfirmation, NorthbankDemo]) -> list[Option]:
    """Block only after a clear yes; a hesitant answer is asked again."""
    customer = turn.tools.customers[turn.known["customer_id"]]
    if turn.confirmed():
        block = turn.tools.block_card.plan(customer.id)
        return [say("card_blocked", next="anything_else", do=[block], last4=customer.card_last4,
                    delivery_date=block.result)]
    if turn.facts.label == "no":
        return [say("block_not_done", next="anything_else")]
    return [say("confirm_block_again", next="confirm_block", last4=customer.card_last4)]


@policy.step(facts=PaymentDetails)
def dispute_details(turn: Turn[PaymentDetails, NorthbankDemo]) -> list[Option]:
    """Find the payment, open the dispute, apply the provisional-credit rules."""
    customer_id = turn.known["customer_id"]
    date = turn.known.get("payment_date")
    amount = turn.known.get("amount")
    payment = turn.tools.find_payment(
        customer_id, dt.date.fromisoformat(date) if date else None,
        Decimal(str(amount)).quantize(Decimal("0.01")) if amount is not None else None, turn.known.get("merchant"))
    if payment is None:
        return [say("dispute_not_found", next="dispute_details")]
    dispute = turn.tools.open_dispute.plan(customer_id, payment.id)
    details = dict(do=[dispute], reference=dispute.result, amount=payment.amount, merchant=payment.merchant)
    age = turn.tools.account_age_days(customer_id)
    if payment.amount <= 100 or (payment.amount <= 500 and age >= 180):
        return [say("dispute_opened_with_credit", next="anything_else", **details)]
    if payment.amount > 500 and age >= 365:
        return [say("dispute_opened_large_credit", next="anything_else", **details)]
    return [say("dispute_opened_no_credit", next="anything_else", **details)]


@policy.step(facts=FeeChoice)
def fee_refund(turn: Turn[FeeChoice, NorthbankDemo]) -> list[Option]:
    """Refund at most EUR 50, at most once in 12 months."""
    fee_type = turn.facts.fee_type
    if fee_type is None:
        return [say("ask_fee_type", next="fee_refund")]
    customer_id = turn.known["customer_id"]
    fee = turn.tools.latest_fee(customer_id, fee_type)
    if fee is None:
        return [say("fee_not_found", next="anything_else", fee_type=fee_type)]
    last_refund = turn.tools.last_refund_date(customer_id)
    if last_refund is not None and (turn.tools.today - last_refund).days < 365:
        return [say("fee_refund_declined_recent", next="anything_else", last_refund=last_refund, fee_type=fee_type)]
    amount = fee["amount"]
    if amount > FEE_REFUND_LIMIT:
        review = turn.tools.request_supervisor_review.plan(customer_id, fee_type, amount)
        return [
            say("fee_refund_declined_amount", next="anything_else", fee_type=fee_type, amount=amount),
            say("fee_refund_supervisor_review", next="anything_else", do=[review], fee_type=fee_type, amount=amount),
        ]
    refund = turn.tools.refund_fee.plan(customer_id, fee_type, amount)
    return [say("fee_refunded", next="anything_else", do=[refund], fee_type=fee_type, amount=amount)]

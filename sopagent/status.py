"""What a decision's status and chooser can be: one definition for the store, the engine and the API."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """What happened to a decision's reply."""

    SENT = "sent"
    """The customer received it."""
    PENDING = "pending"
    """It waits for an operator (the holding reply was sent)."""
    ESCALATED = "escalated"
    """Something failed: the policy's fallback was sent and the conversation handed over."""
    RECEIVED = "received"
    """The message was recorded while an operator had the conversation; the agent said nothing."""


class ChosenBy(StrEnum):
    """Who chose a decision's reply."""

    POLICY = "policy"
    """The step allowed one option."""
    MODEL = "model"
    """The model picked one of several."""
    FALLBACK = "fallback"
    """Something failed; the policy's fallback was taken."""
    NONE = "none"
    """Nothing was chosen (a message recorded while an operator has the conversation)."""

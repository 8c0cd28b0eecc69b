"""Request and response bodies of the HTTP API (they make up the OpenAPI document)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sopagent.status import ChosenBy, Status

MetadataValue = str | int | float | bool | None


class RequestBody(BaseModel):
    """A body a client sends: every text in it must be valid Unicode (a lone surrogate would make every
    later read of what it is stored in fail), so it is refused here with a 422."""

    @model_validator(mode="after")
    def _valid_text(self) -> "RequestBody":
        try:
            json.dumps(self.model_dump(mode="json"), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("the body holds text that is not valid Unicode (a lone surrogate such as \\ud800); "
                             "send UTF-8 text") from exc
        return self


class StartConversation(RequestBody):
    """Open a conversation under a policy."""

    model_config = ConfigDict(extra="forbid")
    policy: str = Field(min_length=1, max_length=200, description="policy name, e.g. card_services")
    customer_ref: str | None = Field(None, max_length=200, description="your reference for the customer")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, max_length=50,
                                               description="free key/value pairs stored with the conversation")
    language: str | None = Field(None, min_length=2, max_length=20, description=(
        "one of the policy catalog's languages (e.g. de): every reply is sent in it; default the catalog's first"))


class Started(BaseModel):
    """A conversation was opened."""

    conversation_id: str
    policy: str
    step: str
    status: str
    conversation_key: str | None = Field(None, description=(
        "started with a `browser` key only: the key that reaches this conversation alone (post its messages, "
        "wait for its replies); shown once"))


class CustomerMessage(RequestBody):
    """What the customer wrote."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, description="the customer's message (size limit: see the 422 message)")


class Reply(BaseModel):
    """The agent's answer to one message; returned only after its decision was committed."""

    conversation_id: str
    decision_id: int
    reply: str | None = Field(description="what to show the customer now; null while an operator has the conversation")
    response_id: str | None = Field(description="the catalog response chosen (pending: the one awaiting approval)")
    status: Status
    ended: bool = Field(description="the conversation is closed")
    delivery_url: str | None = Field(None, description="pending only: long-poll this for the approved reply")
    effects: list[dict[str, str]] = Field(default_factory=list, description=(
        "the account actions this turn planned, each {name, status}: done, failed, or held for an operator"))


class Delivery(BaseModel):
    """Where a pending reply stands (long-poll result)."""

    decision_id: int
    state: Literal["pending", "approve", "override", "escalate", "not_pending"]
    text: str | None = Field(None, description="the reply sent to the customer when an operator approved or overrode")
    operator: str | None = None
    resolved_at: str | None = None


class OperatorReply(BaseModel):
    """A catalog reply an operator sent while the conversation was taken over."""

    seq: int = Field(description="its place in the audit chain; pass the last one as `after` to wait for more")
    response_id: str | None
    text: str | None = Field(description="the text the customer receives")
    created_at: str


class OperatorReplies(BaseModel):
    """The operator replies after a chain position (long-poll result)."""

    conversation_id: str
    status: str = Field(description="the conversation's status now (taken_over while an operator has it)")
    replies: list[OperatorReply]
    after: int = Field(description="the chain position to pass as `after` next time")


class TranscriptLine(BaseModel):
    """One message of a conversation as its customer saw it."""

    seq: int = Field(description="its place in the audit chain")
    speaker: Literal["customer", "assistant", "operator"]
    text: str
    created_at: str


class Transcript(BaseModel):
    """What the customer wrote and what was sent to them, in order: what a chat page shows after a reload."""

    conversation_id: str
    status: str
    ended: bool = Field(description="the conversation is closed")
    lines: list[TranscriptLine]
    after: int = Field(description="the chain position to pass as `after` to the operator-replies long-poll")
    pending_decision_id: int | None = Field(None, description=(
        "a reply waiting for an operator: long-poll /v1/decisions/{id}/delivery for it"))


class DecisionView(BaseModel):
    """One recorded decision."""

    id: int
    turn: int
    step: str
    status: Status
    response_id: str | None
    chosen_by: ChosenBy
    confidence: float | None
    customer_text: str | None
    sent_text: str | None
    next_step: str
    error: str | None
    created_at: str
    options: list[dict[str, Any]]
    effects: list[dict[str, Any]] = Field(default_factory=list, description=(
        "the decision's account actions: name, arguments, status (held until approved, then planned, done, "
        "failed or cancelled), result, error, idempotency key"))


class ActionView(BaseModel):
    """One recorded operator action."""

    id: int
    action: str
    operator: str
    decision_id: int | None
    response_id: str | None
    sent_text: str | None
    reason: str
    created_at: str


class ConversationView(BaseModel):
    """A conversation, its decisions and operator actions in chain order."""

    id: str
    policy: str
    status: str
    step: str
    turns: int
    customer_ref: str | None
    metadata: dict[str, Any]
    created_at: str
    decisions: list[DecisionView]
    actions: list[ActionView]


class OperatorRequest(RequestBody):
    """Approve or escalate a pending decision."""

    model_config = ConfigDict(extra="forbid")
    reason: str = Field("", max_length=2000)


class OverrideRequest(OperatorRequest):
    """Send another allowed option instead of the one chosen."""

    option_index: int = Field(ge=0, le=1000, description="index into the decision's allowed options")


class OperatorResult(BaseModel):
    """The operator action recorded."""

    action_id: int
    action: str
    decision_id: int | None
    conversation_id: str | None
    sent_text: str | None
    effects: list[dict[str, Any]] = Field(default_factory=list, description=(
        "the decision's account actions after this operator action (approve runs the chosen option's, "
        "override the other option's, escalate none)"))


class Problem(BaseModel):
    """An error: what is wrong and how to fix it."""

    error: str


class Health(BaseModel):
    """Liveness / readiness."""

    status: Literal["ok", "unavailable"]
    detail: str = ""
    process: int = 0
    """The id of the process that answered (tells ``--workers`` apart behind one port)."""


# --- OpenAI-compatible chat completions ---------------------------------------------------------------


class ChatMessage(RequestBody):
    """An OpenAI chat message; only the last ``user`` message is read."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(RequestBody):
    """An OpenAI chat completion request; ``model`` names the policy."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200, description="the policy name")
    messages: list[ChatMessage] = Field(min_length=1, max_length=1000)
    stream: bool | None = False
    user: str | None = Field(None, max_length=200,
                             description="customer reference: continues that customer's open conversation")
    metadata: dict[str, str] | None = Field(None, description="conversation_id continues that conversation")

"""Customer-channel endpoints: start a conversation, post a message, read it, wait for a held reply."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Header, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from sopagent.engine import TurnResult
from sopagent.server.auth import AnyKey, ChannelKey, LongPollPlace, StartingKey, WaitingKey
from sopagent.server.schemas import (
    ActionView,
    ConversationView,
    CustomerMessage,
    DecisionView,
    Delivery,
    OperatorReplies,
    OperatorReply,
    Problem,
    Reply,
    StartConversation,
    Started,
    Transcript,
    TranscriptLine,
)
from sopagent.server.service import ApiProblem, Service, options_of
from sopagent.status import ChosenBy, Status
from sopagent.store import Decision

router = APIRouter(prefix="/v1", tags=["conversations"])
ERRORS: dict[int | str, dict[str, Any]] = {code: {"model": Problem}
                                           for code in (400, 401, 403, 404, 409, 413, 422, 503)}
ConversationId = Path(min_length=1, max_length=100, description="the id returned when the conversation started")


def _service(request: Request) -> Service:
    return request.app.state.service


def reply_of(result: TurnResult, request: Request) -> Reply:
    """The API shape of a turn result."""
    delivery = (str(request.url_for("delivery", decision_id=result.decision_id))
                if result.status == Status.PENDING else None)
    return Reply(conversation_id=result.conversation_id, decision_id=result.decision_id, reply=result.reply,
                 response_id=result.response_id, status=result.status,  # type: ignore[arg-type]
                 ended=result.ended, delivery_url=delivery,
                 effects=[{"name": e["name"], "status": e["status"]} for e in result.effects])


@router.post("/conversations", response_model=Started, status_code=201, responses=ERRORS)
def start_conversation(body: StartConversation, request: Request, key: StartingKey) -> Started:
    """Open a conversation under a policy; returns its id.

    With a ``browser`` key (a web page's) the answer also holds a ``conversation_key`` that reaches this
    conversation alone; such a start may not name a customer or metadata (a page's visitor is anyone).
    """
    service = _service(request)
    conversation_key = None
    if key.scope == "browser":
        if body.customer_ref is not None or body.metadata:
            raise ApiProblem(422, "a browser key starts anonymous conversations: send only `policy` (a "
                                  "customer reference or metadata must come from your back end's customer key)")
        cid, conversation_key = service.start_for_browser(body.policy, key, body.language)
    else:
        cid = service.start(body.policy, body.customer_ref, body.metadata, key, body.language)
    conversation = service.conversation(cid)
    return Started(conversation_id=cid, policy=body.policy, step=conversation.step, status=conversation.status,
                   conversation_key=conversation_key)


@router.post("/conversations/{conversation_id}/messages", response_model=Reply, responses=ERRORS)
def post_message(body: CustomerMessage, request: Request, key: ChannelKey, background: BackgroundTasks,
                 conversation_id: str = ConversationId,
                 idempotency_key: str | None = Header(None, min_length=1, max_length=200, description=(
                     "a key of the client's choosing, new for each message: a retry with the same key and "
                     "text gets the recorded answer, and the turn and its account actions run once"))) -> Reply:
    """Post the customer's message; the reply comes back only after its decision is committed.

    ``status`` is ``sent`` (show ``reply``), ``pending`` (show ``reply``, the holding message, then
    long-poll ``delivery_url`` for the approved one), ``escalated`` (the fallback reply was sent and a
    person takes over) or ``received`` (an operator has the conversation; ``reply`` is null).
    """
    service = _service(request)
    service.owned_conversation(conversation_id, key)
    result = service.turn(conversation_id, body.text, idempotency_key)
    if result.status == Status.ESCALATED:
        background.add_task(service.escalated, conversation_id, result.decision_id, "agent", result.error)
    background.add_task(service.checkpoint_if_due)
    background.add_task(service.prepare_next, conversation_id)
    return reply_of(result, request)


@router.get("/conversations/{conversation_id}", response_model=ConversationView, responses=ERRORS)
def read_conversation(request: Request, key: AnyKey, conversation_id: str = ConversationId) -> ConversationView:
    """A conversation with its decisions and operator actions in chain order."""
    service = _service(request)
    conversation = service.owned_conversation(conversation_id, key)
    decisions = [DecisionView(id=d.id or 0, turn=d.turn, step=d.step, status=Status(d.status),
                              response_id=d.response_id,
                              chosen_by=ChosenBy(d.chosen_by), confidence=d.confidence, customer_text=d.customer_text,
                              sent_text=d.sent_text, next_step=d.next_step, error=d.error, created_at=d.created_at,
                              options=options_of(d), effects=service.effects_of(d.id or 0))
                 for d in service.store.decisions(conversation_id)]
    actions = [ActionView(id=a.id or 0, action=a.action, operator=a.operator, decision_id=a.decision_id,
                          response_id=a.response_id, sent_text=a.sent_text, reason=a.reason, created_at=a.created_at)
               for a in service.store.actions(conversation_id)]
    return ConversationView(id=conversation.id, policy=conversation.policy_name, status=conversation.status,
                            step=conversation.step, turns=conversation.turns, customer_ref=conversation.customer_ref,
                            metadata=json.loads(conversation.metadata_json or "{}"), created_at=conversation.created_at,
                            decisions=decisions, actions=actions)


@router.get("/conversations/{conversation_id}/transcript", response_model=Transcript, responses=ERRORS)
def read_transcript(request: Request, key: WaitingKey, conversation_id: str = ConversationId) -> Transcript:
    """What the customer wrote and what was sent to them (no facts, options or operator names): what a
    chat page shows again after a reload. A conversation key may read its own conversation's."""
    service = _service(request)
    conversation = service.owned_conversation(conversation_id, key)
    lines: list[TranscriptLine] = []
    after, pending = 0, None
    for row in service.store.transcript(conversation_id):
        if isinstance(row, Decision):
            if row.customer_text:
                lines.append(TranscriptLine(seq=row.seq, speaker="customer", text=row.customer_text,
                                            created_at=row.created_at))
            if row.status == Status.PENDING:
                pending = row.id
        elif row.decision_id is not None and row.decision_id == pending:
            pending = None  # settled by an operator
        if row.sent_text:
            operator = not isinstance(row, Decision) and row.action == "operator_reply"
            lines.append(TranscriptLine(seq=row.seq, speaker="operator" if operator else "assistant",
                                        text=row.sent_text, created_at=row.created_at))
            after = max(after, row.seq) if operator else after
    return Transcript(conversation_id=conversation_id, status=conversation.status,
                      ended=conversation.status == "closed", lines=lines, after=after,
                      pending_decision_id=pending if conversation.status == "awaiting_approval" else None)


@router.get("/decisions/{decision_id}/delivery", name="delivery", response_model=Delivery, responses=ERRORS)
async def delivery(request: Request, _: LongPollPlace, key: WaitingKey, decision_id: int = Path(ge=1, le=2**62),
                   wait: float = Query(25.0, ge=0, le=3600, description="seconds to wait for an operator (long-poll)")
                   ) -> Delivery:
    """Long-poll a pending reply: returns as soon as an operator approved, overrode or escalated it,
    or after ``wait`` seconds with state ``pending`` (then poll again)."""
    service = _service(request)
    decision: Decision = await run_in_threadpool(service.owned_decision, decision_id, key)
    if decision.status != Status.PENDING:
        return Delivery(decision_id=decision_id, state="not_pending", text=decision.sent_text)
    return await _wait_for_resolution(request, service, decision, wait)


async def _wait_for_resolution(request: Request, service: Service, decision: Decision, wait: float) -> Delivery:
    decision_id = decision.id or 0
    deadline = time.monotonic() + min(wait, service.config.long_poll_max_s)
    while True:
        action = await run_in_threadpool(service.store.resolution, decision_id)
        text = action.sent_text if action is not None else None
        if action is not None and action.action != "escalate" and text is None:
            text = await run_in_threadpool(service.run_effects, decision)  # the reply the released actions fill
        if action is not None and (text is not None or action.action == "escalate"):
            return Delivery(decision_id=decision_id, state=action.action,  # type: ignore[arg-type]
                            text=text, operator=action.operator, resolved_at=action.created_at)
        if time.monotonic() >= deadline or await request.is_disconnected():
            return Delivery(decision_id=decision_id, state="pending", text=None)
        await asyncio.sleep(0.2)


@router.get("/conversations/{conversation_id}/operator-replies", response_model=OperatorReplies, responses=ERRORS)
async def operator_replies(request: Request, _: LongPollPlace, key: WaitingKey, conversation_id: str = ConversationId,
                           after: int = Query(0, ge=0, le=2**62, description="the `after` of the previous answer"),
                           wait: float = Query(25.0, ge=0, le=3600,
                                               description="seconds to wait for a reply (long-poll)")
                           ) -> OperatorReplies:
    """Long-poll the catalog replies an operator sends after taking the conversation over: returns as
    soon as there is one after chain position ``after``, or after ``wait`` seconds with none."""
    service = _service(request)
    await run_in_threadpool(service.owned_conversation, conversation_id, key)
    return await _wait_for_replies(request, service, conversation_id, after, wait)


async def _wait_for_replies(request: Request, service: Service, conversation_id: str, after: int,
                            wait: float) -> OperatorReplies:
    deadline = time.monotonic() + min(wait, service.config.long_poll_max_s)
    while True:
        conversation = await run_in_threadpool(service.conversation, conversation_id)
        sent = await run_in_threadpool(service.store.operator_replies, conversation_id, after)
        replies = [OperatorReply(seq=a.seq, response_id=a.response_id, text=a.sent_text, created_at=a.created_at)
                   for a in sent]
        if replies or time.monotonic() >= deadline or await request.is_disconnected():
            return OperatorReplies(conversation_id=conversation_id, status=conversation.status, replies=replies,
                                   after=max([after, *(r.seq for r in replies)]))
        await asyncio.sleep(0.2)

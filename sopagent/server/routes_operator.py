"""Operator endpoints (operator-scope keys): the approval queue, approve, override, escalate.

Each action goes through :class:`sopagent.operations.Operations` and is one chained audit record;
the operator name recorded is the key's name.
"""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Path, Request

from sopagent.errors import ConversationError
from sopagent.operations import Operations
from sopagent.server.auth import OperatorKey
from sopagent.server.routes_conversations import ERRORS
from sopagent.server.schemas import DecisionView, OperatorRequest, OperatorResult, OverrideRequest
from sopagent.server.service import ApiProblem, Service, options_of
from sopagent.status import ChosenBy, Status
from sopagent.store import OperatorAction

router = APIRouter(prefix="/v1", tags=["operator"])
DecisionId = Path(ge=1, le=2**62)


def _result(action: OperatorAction) -> OperatorResult:
    return OperatorResult(action_id=action.id or 0, action=action.action, decision_id=action.decision_id,
                          conversation_id=action.conversation_id, sent_text=action.sent_text)


def _act(request: Request, key: OperatorKey, decision_id: int, kind: str, reason: str,
         option_index: int | None = None) -> OperatorResult:
    """Record the operator's action; then run the actions it released and answer with their reply."""
    service: Service = request.app.state.service
    decision = service.owned_decision(decision_id, key)
    ops = Operations(service.store, key.name)
    with service.locks.hold(decision.conversation_id):
        try:
            if kind == "approve":
                action = ops.approve(decision_id, reason)
            elif kind == "override":
                action = ops.override(decision_id, option_index or 0, reason)
            else:
                action = ops.escalate(decision_id, reason)
        except ConversationError as exc:
            raise ApiProblem(409, str(exc)) from exc
        sent_text = action.sent_text
        if kind != "escalate" and sent_text is None:
            sent_text = service.run_effects(decision)
    result = _result(action)
    result.sent_text = sent_text
    result.effects = service.effects_of(decision_id)
    return result


@router.get("/pending", response_model=list[DecisionView], responses=ERRORS)
def pending(request: Request, key: OperatorKey) -> list[DecisionView]:
    """Decisions waiting for an operator, oldest first."""
    service: Service = request.app.state.service
    return [DecisionView(id=d.id or 0, turn=d.turn, step=d.step, status=Status(d.status), response_id=d.response_id,
                         chosen_by=ChosenBy(d.chosen_by), confidence=d.confidence, customer_text=d.customer_text,
                         sent_text=d.sent_text, next_step=d.next_step, error=d.error, created_at=d.created_at,
                         options=options_of(d), effects=service.effects_of(d.id or 0))
            for d in service.tenant_pending(key)]


@router.post("/decisions/{decision_id}/approve", response_model=OperatorResult, responses=ERRORS)
def approve(body: OperatorRequest, request: Request, key: OperatorKey, background: BackgroundTasks,
            decision_id: int = DecisionId) -> OperatorResult:
    """Send the reply that waited for approval."""
    background.add_task(request.app.state.service.checkpoint_if_due)
    return _act(request, key, decision_id, "approve", body.reason)


@router.post("/decisions/{decision_id}/override", response_model=OperatorResult, responses=ERRORS)
def override(body: OverrideRequest, request: Request, key: OperatorKey, background: BackgroundTasks,
             decision_id: int = DecisionId) -> OperatorResult:
    """Send another of the decision's allowed options instead."""
    background.add_task(request.app.state.service.checkpoint_if_due)
    return _act(request, key, decision_id, "override", body.reason, body.option_index)


@router.post("/decisions/{decision_id}/escalate", response_model=OperatorResult, responses=ERRORS)
def escalate(body: OperatorRequest, request: Request, key: OperatorKey, background: BackgroundTasks,
             decision_id: int = DecisionId) -> OperatorResult:
    """Do not send the pending reply; hand the conversation to a specialist (the webhook is told)."""
    result = _act(request, key, decision_id, "escalate", body.reason)
    service: Service = request.app.state.service
    background.add_task(service.escalated, result.conversation_id or "", decision_id, f"operator:{key.name}", None)
    background.add_task(service.checkpoint_if_due)
    return result

"""``POST /v1/chat/completions``: the OpenAI chat API in front of the agent.

``model`` names the policy. Only the last ``user`` message is read (the conversation's history is
in the audit store, not in the request). The conversation is identified, first match wins, by:

1. the ``X-Conversation-Id`` header;
2. ``metadata.conversation_id``;
3. ``user`` (a customer reference): that customer's newest open conversation under the policy,
   or a new one;
4. otherwise a new conversation.

The response carries the conversation id in the ``X-Conversation-Id`` header and in a
``sopagent`` object (decision id, response id, status). ``stream: true`` returns the committed
catalog reply as server-sent chunks; the decision is committed before the first byte is sent.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

from fastapi import APIRouter, BackgroundTasks, Header, Request
from fastapi.responses import JSONResponse, StreamingResponse

from sopagent.server.auth import CustomerKey
from sopagent.server.routes_conversations import ERRORS
from sopagent.server.schemas import ChatCompletionRequest
from sopagent.server.service import ApiProblem, Service
from sopagent.status import Status

router = APIRouter(prefix="/v1", tags=["openai"])
CONVERSATION_HEADER = "X-Conversation-Id"


def _last_user_text(body: ChatCompletionRequest) -> str:
    for message in reversed(body.messages):
        if message.role != "user":
            continue
        if isinstance(message.content, str):
            return message.content
        if isinstance(message.content, list):
            parts = [p.get("text") for p in message.content if p.get("type") == "text"]
            if all(isinstance(p, str) for p in parts) and parts:
                return "\n".join(parts)  # type: ignore[arg-type]
        raise ApiProblem(422, "the last user message has no text content; send it as a string")
    raise ApiProblem(422, "messages has no user message; the last user message is what the customer said")


@router.get("/models", responses=ERRORS)
def list_models(request: Request, key: CustomerKey) -> dict[str, Any]:
    """The policies this service serves, as OpenAI models (front ends list them before they chat)."""
    service: Service = request.app.state.service
    models = [{"id": name, "object": "model", "created": service.started, "owned_by": "sopagent"}
              for name in sorted(service.agents)]
    return {"object": "list", "data": models}


@router.post("/chat/completions", responses=ERRORS)
def chat_completions(body: ChatCompletionRequest, request: Request, key: CustomerKey, background: BackgroundTasks,
                     x_conversation_id: str | None = Header(None, max_length=100)) -> Any:
    """OpenAI-compatible chat completion; ``model`` is the policy name (see the module doc)."""
    service: Service = request.app.state.service
    service.agent(body.model)  # 404 for a policy this server does not run
    text = _last_user_text(body)
    cid = x_conversation_id or (body.metadata or {}).get("conversation_id")
    if cid:
        conversation = service.owned_conversation(cid, key)
        if conversation.policy_name != body.model:
            raise ApiProblem(409, f"conversation {cid} runs policy {conversation.policy_name!r}, not {body.model!r}")
    elif body.user:
        cid = service.open_conversation_of(body.model, body.user, key) or service.start(body.model, body.user, {}, key)
    else:
        cid = service.start(body.model, None, {}, key)
    result = service.turn(cid, text)
    if result.status == Status.ESCALATED:
        background.add_task(service.escalated, cid, result.decision_id, "agent", result.error)
    background.add_task(service.checkpoint_if_due)
    content = result.reply or ""
    created = int(time.time())
    completion_id = f"chatcmpl-sop-{result.decision_id}"
    extra = {"conversation_id": cid, "decision_id": result.decision_id, "response_id": result.response_id,
             "status": result.status, "ended": result.ended}
    headers = {CONVERSATION_HEADER: cid}
    if body.stream:
        return StreamingResponse(_chunks(completion_id, created, body.model, content, extra),
                                 media_type="text/event-stream", headers=headers, background=background)
    return JSONResponse({
        "id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "sopagent": extra,
    }, headers=headers, background=background)


def _chunks(completion_id: str, created: int, model: str, content: str, extra: dict[str, Any]) -> Iterator[str]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        payload = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                   "sopagent": extra}
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    words = content.split(" ")
    for i, word in enumerate(words):
        yield chunk({"content": word if i == len(words) - 1 else word + " "})
    yield chunk({}, "stop")
    yield "data: [DONE]\n\n"

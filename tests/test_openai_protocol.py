"""The OpenAI-API backend against a real HTTP server on loopback that answers as we script it.

These tests need no model: they check what goes over the wire (strict JSON schema, the
llama.cpp and vLLM request forms), how answers are read (log-probabilities into option
probabilities, or unknown), and that failures become one BackendError that says whether a retry
helps -- and, through the Agent, the policy's fallback and an escalation.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from sopagent import Agent
from sopagent.errors import BackendError, ConstraintNotEnforcedError
from sopagent.models import build_model, parse_spec
from sopagent.models.base import ChatPrompt
from sopagent.models.llamacpp_server import free_port
from sopagent.models.openai_api import OpenAIChatModel, label_probabilities, strip_keywords

OK = "not_requested"
PROMPT = ChatPrompt("system", "Customer (latest message): my card was stolen", "Task: pick A, B or C")


class ScriptedServer:
    """A real HTTP server; each POST gets the next scripted (status, body) and is recorded."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length", 0))
                server.requests.append({"path": self.path, "body": json.loads(self.rfile.read(length)),
                                        "auth": self.headers.get("authorization")})
                status, body = server.answers.pop(0) if server.answers else (500, {"error": {"message": "empty"}})
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                if status == 429:
                    self.send_header("retry-after-ms", "10")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def completion(content: str, logprobs: list[dict[str, Any]] | None = None, finish: str = "stop") -> dict[str, Any]:
    """A chat-completion body as OpenAI writes it."""
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": finish,
                         "message": {"role": "assistant", "content": content, "refusal": None},
                         "logprobs": {"content": logprobs} if logprobs is not None else None}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55}}


def token(text: str, logprob: float, top: dict[str, float] | None = None) -> dict[str, Any]:
    alternatives = [{"token": t, "logprob": lp, "bytes": None} for t, lp in (top or {text: logprob}).items()]
    return {"token": text, "logprob": logprob, "bytes": None, "top_logprobs": alternatives}


def choice_tokens(label: str, top: dict[str, float]) -> list[dict[str, Any]]:
    return [token('{"', -0.01), token("choice", -0.01), token('":"', -0.01), token(label, top[label], top),
            token('"}', -0.01)]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    running = ScriptedServer()
    yield running
    running.close()


def model_for(server: ScriptedServer, backend: str = "openai-compatible", options: str = "retries=0",
              monkeypatch: pytest.MonkeyPatch | None = None) -> OpenAIChatModel:
    if backend == "openai":
        import openai

        client = openai.OpenAI(api_key="test-key", base_url=server.url, max_retries=0, timeout=5)
        return OpenAIChatModel(parse_spec("openai:gpt-test"), client=client)
    return build_model(parse_spec(f"{backend}:{server.url}?{options}#m"))  # type: ignore[return-value]


def test_openai_requests_are_strict_json_schema_with_unsupported_keywords_moved_after(server, card_policy) -> None:
    identity = card_policy.steps["verify_identity"].facts
    server.answers.append((200, completion(json.dumps({"card_last4": "12x4", "date_of_birth": None,
                                                       "handoff": OK}))))
    request = card_policy.steps["welcome"].facts
    server.answers.append((200, completion(json.dumps({"intent": "buy_a_boat", "handoff": OK}))))
    model = model_for(server, "openai")
    extraction = model.extract(PROMPT, identity)  # the pattern was not sent, so it is checked after decoding
    assert extraction.facts.card_last4 is None and extraction.invalid == {"card_last4": "12x4"}
    with pytest.raises(BackendError, match="did not validate") as caught:
        model.extract(PROMPT, request)  # a required field that is not valid makes the answer unusable
    assert caught.value.retryable is False
    sent = server.requests[0]["body"]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["strict"] is True
    schema_text = json.dumps(sent["json_schema"]["schema"])
    assert '"pattern"' not in schema_text and '"format"' not in schema_text and '"default"' not in schema_text
    assert sent["json_schema"]["schema"]["additionalProperties"] is False
    assert set(sent["json_schema"]["schema"]["required"]) == set(identity.model_fields)


def test_strip_keywords_keeps_properties_named_like_keywords() -> None:
    schema = {"type": "object", "properties": {"pattern": {"type": "string", "pattern": "^a$"},
                                               "format": {"type": "string", "format": "date"}}}
    assert strip_keywords(schema) == {"type": "object", "properties": {"pattern": {"type": "string"},
                                                                       "format": {"type": "string"}}}


@pytest.mark.parametrize("options, where", [
    ("format=json_object", lambda body: body["response_format"]["schema"]),
    ("format=guided", lambda body: body["guided_json"]),
    ("format=structured_outputs", lambda body: body["structured_outputs"]["json"]),
    ("", lambda body: body["response_format"]["json_schema"]["schema"]),
])
def test_server_request_forms_keep_the_full_schema(server, card_policy, options: str, where: Any) -> None:
    identity = card_policy.steps["verify_identity"].facts
    server.answers.append((200, completion(json.dumps({"card_last4": "4821", "date_of_birth": "1985-03-14",
                                                       "handoff": OK}))))
    facts = model_for(server, "vllm", options or "retries=0").extract(PROMPT, identity).facts
    assert facts.card_last4 == "4821"
    schema = where(server.requests[0]["body"])
    assert schema["properties"]["card_last4"]["anyOf"][0]["pattern"] == "^[0-9]{4}$"  # enforced by the server


def test_choice_probabilities_come_from_logprobs(server) -> None:
    top = {"A": -2.0, "B": -0.2, "C": -3.0, "Blue": -1.0}
    server.answers.append((200, completion('{"choice":"B"}', choice_tokens("B", top))))
    choice = model_for(server).choose(PROMPT, 3)
    assert choice.index == 1
    assert sum(choice.probabilities) == pytest.approx(1.0)
    assert choice.probabilities[1] == max(choice.probabilities)
    assert choice.probabilities[0] > choice.probabilities[2]
    body = server.requests[0]["body"]
    assert body["logprobs"] is True and body["response_format"]["json_schema"]["schema"]["properties"]["choice"][
        "enum"] == ["A", "B", "C"]


def test_label_probabilities_handle_a_quote_inside_the_label_token() -> None:
    tokens = [token("{", -0.1), token(' "choice', -0.1), token('":', -0.1),
              token(' "A', -0.5, {' "A': -0.5, ' "B': -1.5, ' "Z': -0.1})]
    probabilities = label_probabilities('{ "choice": "A"}', tokens, "AB")
    assert probabilities[0] > probabilities[1] and sum(probabilities) == pytest.approx(1.0)


@pytest.mark.parametrize("approve, status", [(True, "pending"), (False, "sent")])
def test_without_logprobs_the_probability_is_unknown_and_can_require_approval(server, card_policy, store,
                                                                              approve: bool, status: str) -> None:
    fee = {"intent": "fee_refund", "handoff": OK}
    identity = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}
    for facts in (fee, identity, {"fee_type": "annual", "handoff": OK}):
        server.answers.append((200, completion(json.dumps(facts))))
    server.answers.append((200, completion('{"choice":"A"}')))  # no logprobs in the answer
    agent = Agent(card_policy, model_for(server), store, approve_when_confidence_unknown=approve)
    cid = agent.start()
    agent.respond(cid, "refund my fee")
    agent.respond(cid, "4821, 14 March 1985")
    result = agent.respond(cid, "the annual fee")
    assert result.chosen_by == "model" and result.confidence is None
    assert all(option.probability is None for option in result.options)
    assert result.status == status
    assert store.get_conversation(cid).status == ("awaiting_approval" if approve else "active")
    assert store.decisions(cid)[-1].model_name == f"openai-compatible:{server.url}#m"


@pytest.mark.parametrize("status, retryable, attempts", [(429, True, 3), (503, True, 3), (400, False, 1),
                                                         (404, False, 1)])
def test_http_failures_become_one_backend_error(server, status: int, retryable: bool, attempts: int) -> None:
    server.answers.extend([(status, {"error": {"message": f"status {status}"}})] * 3)
    model = model_for(server, options="retries=2&timeout=5")
    with pytest.raises(BackendError) as caught:
        model.choose(PROMPT, 3)
    assert caught.value.retryable is retryable
    assert f"HTTP {status}" in str(caught.value) and "fix:" in str(caught.value)
    assert len(server.requests) == attempts  # the openai client's own bounded retries


def test_a_dead_server_is_retryable(server) -> None:
    model = build_model(parse_spec(f"openai-compatible:http://127.0.0.1:{free_port()}/v1?retries=0&timeout=2#m"))
    with pytest.raises(BackendError) as caught:
        model.choose(PROMPT, 2)
    assert caught.value.retryable is True


@pytest.mark.parametrize("answer", [completion("not json"), completion('{"choice":"Q"}'),
                                    completion('{"choice":"A', finish="length")])
def test_malformed_answers_end_in_the_fallback_and_an_escalation(server, card_policy, store, answer) -> None:
    fee = {"intent": "fee_refund", "handoff": OK}
    identity = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": OK}
    for facts in (fee, identity, {"fee_type": "annual", "handoff": OK}):
        server.answers.append((200, completion(json.dumps(facts))))
    server.answers.append((200, answer))
    agent = Agent(card_policy, model_for(server), store)
    cid = agent.start()
    agent.respond(cid, "refund my fee")
    agent.respond(cid, "4821, 14 March 1985")
    result = agent.respond(cid, "the annual fee")
    assert result.chosen_by == "fallback" and result.status == "escalated"
    assert result.response_id == card_policy.fallback and result.error


def test_self_test_refuses_a_server_that_ignores_the_constraint(server) -> None:
    server.answers.append((200, completion("Blue")))
    with pytest.raises(ConstraintNotEnforcedError, match="NOT being applied"):
        model_for(server).self_test()
    server.answers.append((200, completion('{"answer": "zq58"}')))
    model_for(server).self_test()
    server.answers.append((422, {"error": {"message": "unknown field response_format"}}))
    with pytest.raises(ConstraintNotEnforcedError, match="rejected the structured-output request"):
        model_for(server).self_test()


def test_the_api_key_comes_from_the_named_variable(server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEAM_KEY", "sk-team-secret")
    server.answers.append((200, completion('{"choice":"A"}')))
    model = build_model(parse_spec(f"vllm:{server.url}?key_env=TEAM_KEY&retries=0#m"))
    model.choose(PROMPT, 2)
    assert server.requests[0]["auth"] == "Bearer sk-team-secret"
    assert "sk-team-secret" not in model.name

"""The HTTP service on a real uvicorn server (loopback), on SQLite and on a real PostgreSQL 15."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from postgres import fresh_postgres_url, postgres_server, postgres_url  # noqa: F401 (fixtures)
from server_harness import CARD, DISPUTE, ID_MARIA, LARGE_PAYMENT, LOST, Live, WebhookReceiver, say, serve_in_thread

from sopagent.server.config import ServeConfig
from sopagent.server.keys import revoke_key


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The audit store: a SQLite file, or a fresh database on the suite's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return request.getfixturevalue("fresh_postgres_url")


@pytest.fixture
def hook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def live(db_url: str, hook: WebhookReceiver) -> Iterator[Live]:
    config = ServeConfig(policies=[CARD], db=db_url, model="echo", model_timeout_s=1.0, webhook_url=hook.url,
                         max_message_chars=500, max_body_bytes=4096)
    yield from serve_in_thread(config)


def _start(client: httpx.Client, **body: object) -> str:
    response = client.post("/v1/conversations", json={"policy": "card_services", **body})
    assert response.status_code == 201, response.text
    return response.json()["conversation_id"]


def test_conversation_round_trip(live: Live) -> None:
    with live.client() as client:
        cid = _start(client, customer_ref="cust-7", metadata={"channel": "web"})
        response = client.post(f"/v1/conversations/{cid}/messages", json={"text": say(LOST)})
        assert response.status_code == 200, response.text
        reply = response.json()
        assert reply["response_id"] == "ask_identity" and reply["status"] == "sent"
        catalog = live.service.agents["card_services"].policy.catalog
        assert reply["reply"] == catalog["ask_identity"].text
        view = client.get(f"/v1/conversations/{cid}").json()
    assert view["customer_ref"] == "cust-7" and view["metadata"] == {"channel": "web"}
    assert [d["id"] for d in view["decisions"]] == [reply["decision_id"]]
    assert view["decisions"][0]["sent_text"] == reply["reply"] and view["step"] == "verify_identity"
    assert live.service.store.verify_chain().intact
    assert live.client().get("/healthz").status_code == 200
    assert live.client().get("/readyz").json()["status"] == "ok"


def test_keys_and_scopes(live: Live) -> None:
    with live.client() as client:
        cid = _start(client)
    anonymous = httpx.post(f"{live.url}/v1/conversations", json={"policy": "card_services"})
    assert anonymous.status_code == 401 and "Authorization: Bearer" in anonymous.json()["error"]
    assert live.client("sop_not-a-real-key").post(f"/v1/conversations/{cid}/messages",
                                                  json={"text": "hi"}).status_code == 401
    as_operator = live.ops().post(f"/v1/conversations/{cid}/messages", json={"text": say(LOST)})
    assert as_operator.status_code == 403 and "scope 'operator'" in as_operator.json()["error"]
    as_customer = live.client().post("/v1/decisions/1/approve", json={})
    assert as_customer.status_code == 403
    key_row = [k for k in _keys(live) if k.scope == "customer"][0]
    revoke_key(live.service.store, key_row.id)
    assert live.client().post("/v1/conversations", json={"policy": "card_services"}).status_code == 401
    assert live.customer not in as_operator.text  # keys never echoed


def _keys(live: Live) -> list:
    from sopagent.server.keys import list_keys

    return list_keys(live.service.store)


def test_pending_reply_delivered_after_operator_approval(live: Live, hook: WebhookReceiver) -> None:
    catalog = live.service.agents["card_services"].policy.catalog
    with live.client() as client:
        cid = _start(client)
        for facts in (DISPUTE, ID_MARIA):
            assert client.post(f"/v1/conversations/{cid}/messages", json={"text": say(facts)}).status_code == 200
        held = client.post(f"/v1/conversations/{cid}/messages", json={"text": say(LARGE_PAYMENT)}).json()
        assert held["status"] == "pending" and held["reply"] == catalog["holding_for_review"].text
        decision_id = held["decision_id"]
        assert client.get(f"/v1/decisions/{decision_id}/delivery", params={"wait": 0}).json()["state"] == "pending"
        result: dict = {}
        poller = threading.Thread(target=lambda: result.update(
            client.get(held["delivery_url"], params={"wait": 20}).json()))
        poller.start()
        queue = live.ops().get("/v1/pending").json()
        assert [d["id"] for d in queue] == [decision_id]
        # the operator sees the deed before approving it: opening the dispute waits for the approval
        assert [(e["name"], e["status"], e["arguments"]["payment_id"]) for e in queue[0]["effects"]] == [
            ("open_dispute", "held", "T5002")]
        assert held["effects"] == [{"name": "open_dispute", "status": "held"}]
        approved = live.ops().post(f"/v1/decisions/{decision_id}/approve", json={"reason": "checked"})
        assert approved.status_code == 200, approved.text
        poller.join(20)
    assert result["state"] == "approve" and result["operator"] == "ana"
    assert "€899.00" in result["text"] and result["text"] == approved.json()["sent_text"]
    [opened] = approved.json()["effects"]
    assert opened["status"] == "done" and opened["result"] in result["text"]  # the reply names the dispute's reference
    again = live.ops().post(f"/v1/decisions/{decision_id}/approve", json={})
    assert again.status_code == 409 and "already handled" in again.json()["error"]
    assert live.service.store.verify_chain().intact


def test_operator_replies_after_a_take_over_reach_the_customer_by_long_poll(live: Live) -> None:
    from sopagent.operations import Operations

    with live.client() as client:
        cid = _start(client)
        assert client.post(f"/v1/conversations/{cid}/messages", json={"text": say(LOST)}).status_code == 200
        url = f"/v1/conversations/{cid}/operator-replies"
        none_yet = client.get(url, params={"wait": 0}).json()
        assert (none_yet["replies"], none_yet["after"], none_yet["status"]) == ([], 0, "active")
        result: dict = {}
        poller = threading.Thread(target=lambda: result.update(client.get(url, params={"wait": 20}).json()))
        poller.start()
        ops = Operations(live.service.store, "ana")
        ops.take_over(cid, "customer asked for a person")
        sent = ops.reply(cid, "ask_fee_type", {}, "")
        poller.join(20)
        assert [r["text"] for r in result["replies"]] == [sent.sent_text] and result["status"] == "taken_over"
        assert result["after"] == sent.seq
        later = client.get(url, params={"after": result["after"], "wait": 0}).json()
        assert later["replies"] == [] and later["after"] == sent.seq
        held = client.post(f"/v1/conversations/{cid}/messages", json={"text": "hello?"}).json()
        assert (held["status"], held["reply"]) == ("received", None)
    unknown = live.client().get("/v1/conversations/no-such-id/operator-replies", params={"wait": 0})
    assert unknown.status_code == 404 and "no-such-id" in unknown.json()["error"]


def test_operator_escalation_notifies_webhook(live: Live, hook: WebhookReceiver) -> None:
    with live.client() as client:
        cid = _start(client)
        for facts in (DISPUTE, ID_MARIA):
            client.post(f"/v1/conversations/{cid}/messages", json={"text": say(facts)})
        held = client.post(f"/v1/conversations/{cid}/messages", json={"text": say(LARGE_PAYMENT)}).json()
    response = live.ops().post(f"/v1/decisions/{held['decision_id']}/escalate", json={"reason": "fraud team"})
    assert response.status_code == 200
    events = hook.wait_for(1)
    assert events == [{"event": "conversation.escalated", "conversation_id": cid,
                       "decision_id": held["decision_id"], "by": "operator:ana", "error": None}]


def test_model_timeout_gives_fallback_and_escalates(live: Live, hook: WebhookReceiver) -> None:
    fallback = live.service.agents["card_services"].policy.catalog["handoff_to_human"].text
    with live.client() as client:
        cid = _start(client)
        slow = client.post(f"/v1/conversations/{cid}/messages", json={"text": say(LOST, _sleep=2.5)}).json()
        time.sleep(1.7)  # the abandoned call still occupies the model worker until it finishes
        failing = _start(client)
        broken = client.post(f"/v1/conversations/{failing}/messages", json={"text": say(LOST, _fail="gpu")}).json()
    assert slow["status"] == "escalated" and slow["reply"] == fallback
    assert broken["status"] == "escalated" and broken["reply"] == fallback
    decisions = {d.id: d for d in live.service.store.decisions()}
    assert "did not answer within 1 s" in decisions[slow["decision_id"]].error
    assert "told to fail: gpu" in decisions[broken["decision_id"]].error
    events = hook.wait_for(2)
    assert sorted(e["decision_id"] for e in events) == sorted([slow["decision_id"], broken["decision_id"]])
    assert {e["error"] for e in events} <= {"ModelError", "BackendError"} and "gpu" not in json.dumps(events)


def test_bad_input_gets_4xx_with_a_message(live: Live) -> None:
    with live.client() as client:
        cid = _start(client)
        messages = f"/v1/conversations/{cid}/messages"
        cases = {
            "malformed JSON": client.post(messages, content=b'{"text": ', headers={"content-type": "application/json"}),
            "wrong type": client.post(messages, json={"text": 42}),
            "missing field": client.post(messages, json={}),
            "too long": client.post(messages, json={"text": "x" * 501}),
            "body too big": client.post(messages, json={"text": "x" * 5000}),
            "invalid UTF-8": client.post(messages, content=b'{"text": "\xff\xfe"}',
                                         headers={"content-type": "application/json"}),
            "empty": client.post(messages, json={"text": "   "}),
            "lone surrogate in metadata": client.post("/v1/conversations", content=b'{"policy": "card_services", '
                                                      b'"metadata": {"note": "x\\ud800y"}}',
                                                      headers={"content-type": "application/json"}),
            "unknown conversation": client.post("/v1/conversations/nope/messages", json={"text": "hi"}),
            "unknown policy": client.post("/v1/conversations", json={"policy": "nope"}),
            "unknown decision": client.get("/v1/decisions/999999/delivery", params={"wait": 0}),
        }
        client.post(messages, json={"text": say(LOST)})
        client.post(messages, json={"text": say({"intent": "nothing_else", "handoff": "requested"})})
    expected = {"malformed JSON": 422, "wrong type": 422, "missing field": 422, "too long": 422, "body too big": 413,
                "invalid UTF-8": 400, "empty": 422, "lone surrogate in metadata": 422, "unknown conversation": 404, "unknown policy": 404,
                "unknown decision": 404}
    got = {name: r.status_code for name, r in cases.items()}
    assert got == expected, {n: cases[n].text for n in got if got[n] != expected[n]}
    assert "limit is 500" in cases["too long"].json()["error"]
    assert "not valid Unicode" in cases["lone surrogate in metadata"].json()["error"]
    assert "this server runs: card_services" in cases["unknown policy"].json()["error"]
    assert "unknown conversation 'nope'" in cases["unknown conversation"].json()["error"]
    assert all(r.json()["error"] for r in cases.values())
    status = live.client().get(f"/v1/conversations/{cid}").json()["status"]
    if status == "closed":
        closed = live.client().post(messages, json={"text": say(LOST)})
        assert closed.status_code == 409 and "closed" in closed.json()["error"]
    else:
        pytest.fail(f"a hand-off request should close the conversation, it is {status}")


def test_a_retried_message_with_the_same_idempotency_key_runs_its_action_once(live: Live) -> None:
    complaint = say({"intent": "complaint", "handoff": "not_requested"})
    with live.client() as client:
        cid = _start(client)
        url = f"/v1/conversations/{cid}/messages"
        first = client.post(url, json={"text": complaint}, headers={"Idempotency-Key": "web-17"})
        again = client.post(url, json={"text": complaint}, headers={"Idempotency-Key": "web-17"})
        other = client.post(url, json={"text": "something else"}, headers={"Idempotency-Key": "web-17"})
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json() == first.json() and first.json()["effects"] == [{"name": "log_complaint", "status": "done"}]
    assert other.status_code == 409 and "already used for another message" in other.json()["error"]
    store = live.service.store
    assert [e.name for e in store.effects(conversation_id=cid)] == ["log_complaint"]
    assert len(store.decisions(cid)) == 1 and store.verify_chain().intact

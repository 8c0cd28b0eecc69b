"""Tenancy on a real server (SQLite and PostgreSQL): every route answers another tenant's conversation,
decision or reply as unknown (404), and its own as before."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import pytest
from postgres import fresh_postgres_url, postgres_server, postgres_url  # noqa: F401 (fixtures)
from server_harness import CARD, DISPUTE, ID_MARIA, LARGE_PAYMENT, Live, say, serve_in_thread

from sopagent.server.config import ServeConfig
from sopagent.server.keys import create_key, tenant_of


@pytest.fixture(params=["sqlite", "postgres"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    db = f"sqlite:///{tmp_path / 'audit.db'}" if request.param == "sqlite" else request.getfixturevalue(
        "fresh_postgres_url")
    yield from serve_in_thread(ServeConfig(policies=[CARD], db=db, model="echo", model_timeout_s=1.0))


def _client(live: Live, key: str) -> httpx.Client:
    return httpx.Client(base_url=live.url, timeout=30, headers={"Authorization": f"Bearer {key}"})


def _held_conversation(client: httpx.Client, ref: str) -> tuple[str, int]:
    """A conversation of the client's tenant with a reply that waits for an operator."""
    started = client.post("/v1/conversations", json={"policy": "card_services", "customer_ref": ref})
    assert started.status_code == 201, started.text
    cid = started.json()["conversation_id"]
    for facts in (DISPUTE, ID_MARIA):
        assert client.post(f"/v1/conversations/{cid}/messages", json={"text": say(facts)}).status_code == 200
    held = client.post(f"/v1/conversations/{cid}/messages", json={"text": say(LARGE_PAYMENT)}).json()
    assert held["status"] == "pending", held
    return cid, held["decision_id"]


def _routes(cid: str, decision: int) -> list[tuple[str, str, dict]]:
    """Every route that names a conversation or a decision, as (method, path, JSON body)."""
    return [("GET", f"/v1/conversations/{cid}", {}),
            ("POST", f"/v1/conversations/{cid}/messages", {"text": say(ID_MARIA)}),
            ("GET", f"/v1/decisions/{decision}/delivery?wait=0", {}),
            ("GET", f"/v1/conversations/{cid}/operator-replies?wait=0", {})]


def _operator_routes(decision: int) -> list[tuple[str, str, dict]]:
    return [("POST", f"/v1/decisions/{decision}/override", {"option_index": 0, "reason": "x"}),
            ("POST", f"/v1/decisions/{decision}/escalate", {"reason": "x"}),
            ("POST", f"/v1/decisions/{decision}/approve", {"reason": "x"})]


def test_every_route_answers_another_tenants_conversation_as_unknown(live: Live) -> None:
    store = live.service.store
    _, bank_customer = create_key(store, "customer", "bank-web", tenant="bank")
    _, bank_operator = create_key(store, "operator", "bea", tenant="bank")
    _, shop_customer = create_key(store, "customer", "shop-web", tenant="shop")
    _, shop_operator = create_key(store, "operator", "sam", tenant="shop")
    with _client(live, bank_customer) as bank, _client(live, shop_customer) as shop, \
            _client(live, bank_operator) as bank_ops, _client(live, shop_operator) as shop_ops:
        bank_cid, bank_decision = _held_conversation(bank, "cust-1")
        shop_cid, shop_decision = _held_conversation(shop, "cust-1")  # the same customer reference
        assert tenant_of(store, bank_cid) == "bank" and tenant_of(store, shop_cid) == "shop"

        for method, path, body in _routes(bank_cid, bank_decision):  # another tenant's: unknown
            for client in (shop, shop_ops):
                answer = client.request(method, path, json=body or None)
                assert answer.status_code in (403, 404), (method, path, answer.status_code)
                assert answer.status_code == 404 or client is shop_ops and "scope" in answer.json()["error"]
                assert "Maria" not in answer.text and "4821" not in answer.text
        for method, path, body in _operator_routes(bank_decision):
            answer = shop_ops.request(method, path, json=body)
            assert answer.status_code == 404, (path, answer.text)
        assert [d["id"] for d in shop_ops.get("/v1/pending").json()] == [shop_decision]
        assert [d["id"] for d in bank_ops.get("/v1/pending").json()] == [bank_decision]

        completion = {"model": "card_services", "messages": [{"role": "user", "content": say(ID_MARIA)}]}
        header = shop.post("/v1/chat/completions", json=completion, headers={"X-Conversation-Id": bank_cid})
        assert header.status_code == 404
        by_metadata = shop.post("/v1/chat/completions", json={**completion, "metadata": {"conversation_id": bank_cid}})
        assert by_metadata.status_code == 404
        by_user = shop.post("/v1/chat/completions", json={**completion, "user": "cust-9"})
        assert by_user.status_code == 200 and by_user.headers["X-Conversation-Id"] not in (bank_cid, shop_cid)
        assert tenant_of(store, by_user.headers["X-Conversation-Id"]) == "shop"
        bank_user = bank.post("/v1/chat/completions", json={**completion, "user": "cust-9"})
        assert bank_user.headers["X-Conversation-Id"] != by_user.headers["X-Conversation-Id"]

        for method, path, body in _routes(bank_cid, bank_decision):  # its own: works
            answer = bank.request(method, path, json=body or None)
            assert answer.status_code == 200, (method, path, answer.text)
        approved = bank_ops.post(f"/v1/decisions/{bank_decision}/approve", json={"reason": "checked"})
        assert approved.status_code == 200, approved.text
        assert shop.get(f"/v1/conversations/{shop_cid}").status_code == 200
    assert store.verify_chain().intact


def test_a_conversation_no_key_started_is_unknown_to_every_key(live: Live) -> None:
    cid = live.service.agents["card_services"].start(customer_ref="cli")
    with live.client() as client:
        assert client.get(f"/v1/conversations/{cid}").status_code == 404
        assert client.post(f"/v1/conversations/{cid}/messages", json={"text": say(DISPUTE)}).status_code == 404


def test_key_names_are_unique_and_keys_made_before_tenants_belong_to_the_default_one(tmp_path: Path) -> None:
    from sqlalchemy import text

    from sopagent.errors import ApiKeyError
    from sopagent.server.keys import authenticate, ensure_table
    from sopagent.store import Store

    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    with store.engine.begin() as connection:  # the key table as it was before tenants
        connection.execute(text("DROP TABLE IF EXISTS apikey"))
        connection.execute(text("CREATE TABLE apikey (id VARCHAR PRIMARY KEY, name VARCHAR, scope VARCHAR, "
                                "key_sha256 VARCHAR UNIQUE, created_at VARCHAR, revoked_at VARCHAR)"))
        connection.execute(text("INSERT INTO apikey VALUES ('key_old', 'ana', 'operator', :sha, '2026-01-01', NULL)"),
                           {"sha": "0" * 64})
    ensure_table(store)
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT tenant FROM apikey WHERE id = 'key_old'")).scalar() == "default"
    with pytest.raises(ApiKeyError, match="exists already"):
        create_key(store, "operator", "ana", tenant="bank")
    with pytest.raises(ApiKeyError, match="not a tenant name"):
        create_key(store, "customer", "web", tenant="Bank One")
    row, secret = create_key(store, "customer", None)
    assert row.name == f"customer-{row.id}" and authenticate(store, secret).tenant == "default"

"""Faults and scale-out: a database that goes away, a process killed mid-turn, turns of one
conversation from several processes on PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from postgres import PostgresServer, free_port, fresh_postgres_url, postgres_server, postgres_url  # noqa: F401 (fixtures)
from server_harness import CARD, ID_MARIA, LOST, Live, ServerProcess, cli_key, say, serve_in_thread

from sopagent import Store
from sopagent.server.config import ServeConfig


def _db_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _cut_off(server: PostgresServer, url: str) -> None:
    name = _db_name(url)
    server.sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    server.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")


def _restore(server: PostgresServer, url: str) -> None:
    server.sql(f'ALTER DATABASE "{_db_name(url)}" ALLOW_CONNECTIONS true')


@pytest.fixture
def pg_live(fresh_postgres_url: str) -> Iterator[Live]:  # noqa: F811
    yield from serve_in_thread(ServeConfig(policies=[CARD], db=fresh_postgres_url, model="echo", model_timeout_s=10))


def test_database_unreachable_gives_503_and_sends_nothing(pg_live: Live, postgres_server: PostgresServer,  # noqa: F811
                                                           fresh_postgres_url: str) -> None:  # noqa: F811
    with pg_live.client() as client:
        cid = client.post("/v1/conversations", json={"policy": "card_services"}).json()["conversation_id"]
        # 1: the store is gone before the turn starts
        _cut_off(postgres_server, fresh_postgres_url)
        down = client.post(f"/v1/conversations/{cid}/messages", json={"text": say(LOST)})
        ready = client.get("/readyz")
        _restore(postgres_server, fresh_postgres_url)
        # 2: the store goes away while the model works: the decision cannot be committed
        result: dict = {}
        turn = threading.Thread(target=lambda: result.update(r=client.post(
            f"/v1/conversations/{cid}/messages", json={"text": say(LOST, _sleep=1.5)})))
        turn.start()
        time.sleep(0.7)
        _cut_off(postgres_server, fresh_postgres_url)
        turn.join(30)
        _restore(postgres_server, fresh_postgres_url)
        assert client.get("/readyz").status_code == 200
    assert down.status_code == 503 and "unreachable" in down.json()["error"] or "could not" in down.json()["error"]
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    mid = result["r"]
    assert mid.status_code == 503, mid.text
    assert "no reply was sent" in mid.json()["error"] and "reply" not in mid.json()
    store = Store(fresh_postgres_url)
    assert store.decisions(cid) == [] and store.get_conversation(cid).turns == 0
    assert store.verify_chain().intact


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_killed_mid_turn_loses_nothing_and_records_nothing_twice(backend: str, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    db = f"sqlite:///{tmp_path / 'audit.db'}" if backend == "sqlite" else request.getfixturevalue("fresh_postgres_url")
    key = cli_key(db, "customer")
    headers = {"Authorization": f"Bearer {key}"}
    server = ServerProcess(db)
    try:
        cid = httpx.post(f"{server.url}/v1/conversations", json={"policy": "card_services"}, headers=headers,
                         timeout=10).json()["conversation_id"]
        first = httpx.post(f"{server.url}/v1/conversations/{cid}/messages", json={"text": say(LOST)},
                           headers=headers, timeout=10).json()
        errors: list[BaseException] = []

        def slow_turn() -> None:
            try:
                httpx.post(f"{server.url}/v1/conversations/{cid}/messages",
                           json={"text": say(ID_MARIA, _sleep=5)}, headers=headers, timeout=30)
            except httpx.HTTPError as exc:
                errors.append(exc)

        turn = threading.Thread(target=slow_turn)
        turn.start()
        time.sleep(1.5)  # inside the slow model call
        server.kill()
        turn.join(30)
        assert errors, "the killed server should not have answered"
    finally:
        server.stop()
    store = Store(db)
    assert [d.id for d in store.decisions(cid)] == [first["decision_id"]]
    assert store.get_conversation(cid).turns == 1 and store.verify_chain().intact
    restarted = ServerProcess(db)
    try:
        again = httpx.post(f"{restarted.url}/v1/conversations/{cid}/messages", json={"text": say(ID_MARIA)},
                           headers=headers, timeout=10)
    finally:
        restarted.stop()
    assert again.status_code == 200 and again.json()["response_id"] != "handoff_to_human"
    decisions = store.decisions(cid)
    assert [d.turn for d in decisions] == [1, 2] and store.get_conversation(cid).turns == 2
    assert store.verify_chain().intact


def test_two_worker_processes_serialize_one_conversation(fresh_postgres_url: str) -> None:  # noqa: F811
    key = cli_key(fresh_postgres_url, "customer")
    headers = {"Authorization": f"Bearer {key}"}
    server = ServerProcess(fresh_postgres_url, "--workers", "2", model="echo:0.2")
    try:
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            cids = [client.post("/v1/conversations", json={"policy": "card_services"}).json()["conversation_id"]
                    for _ in range(4)]
            # 6 messages to each conversation at once: every one answered, none refused as stale
            # (a model failure keeps the conversation open at its step, so all 6 are real turns)
            jobs = [(cid, i) for cid in cids for i in range(6)]
            with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
                responses = list(pool.map(lambda job: client.post(
                    f"/v1/conversations/{job[0]}/messages", json={"text": say(LOST, _fail="busy")}), jobs))
    finally:
        server.stop()
    assert [r.status_code for r in responses] == [200] * len(jobs), [r.text for r in responses if r.status_code != 200]
    store = Store(fresh_postgres_url)
    for cid in cids:
        assert [d.turn for d in store.decisions(cid)] == list(range(1, 7))
    assert len({r.json()["decision_id"] for r in responses}) == len(jobs)
    assert store.verify_chain().intact


def test_workers_share_the_port_and_each_takes_connections(fresh_postgres_url: str) -> None:  # noqa: F811
    # Each worker listens on its own SO_REUSEPORT socket: fresh connections reach both processes,
    # and keep-alive clients opened at once are spread over them instead of all landing on one.
    server = ServerProcess(fresh_postgres_url, "--workers", "2", model="echo")
    try:
        assert len(server.processes) == 2
        clients = [httpx.Client(base_url=server.url, timeout=10) for _ in range(24)]
        try:
            answered_by = [client.get("/healthz").json()["process"] for client in clients]
        finally:
            for client in clients:
                client.close()
    finally:
        server.stop()
    assert set(answered_by) == server.processes
    assert min(answered_by.count(pid) for pid in server.processes) >= 3  # 24 connections, not all on one


def test_workers_that_cannot_start_stop_the_service_with_the_reason(fresh_postgres_url: str,  # noqa: F811
                                                                     tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model.gguf"
    out = subprocess.run([sys.executable, "-m", "sopagent.cli", "serve", CARD, "--db", fresh_postgres_url,
                          "--workers", "2", "--model", str(missing), "--port", str(free_port())],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "could not start" in out.stderr and str(missing) in out.stderr


def test_turns_beyond_capacity_wait_holding_nothing_then_get_503(fresh_postgres_url: str) -> None:  # noqa: F811
    # One turn past admission at a time; a turn that waits longer than turn_wait_s is refused with
    # a 503 that says why, and nothing is recorded for it.
    config = ServeConfig(policies=[CARD], db=fresh_postgres_url, model="echo", model_timeout_s=10,
                         turns_in_flight=1, turn_wait_s=0.5)
    for live in serve_in_thread(config):
        with live.client() as client:
            cids = [client.post("/v1/conversations", json={"policy": "card_services"}).json()["conversation_id"]
                    for _ in range(3)]
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                answers = list(pool.map(lambda cid: client.post(
                    f"/v1/conversations/{cid}/messages", json={"text": say(LOST, _sleep=1.5)}), cids))
        codes = sorted(a.status_code for a in answers)
        assert codes == [200, 503, 503], [a.text for a in answers]
        refused = [a for a in answers if a.status_code == 503]
        assert all("at capacity" in a.json()["error"] for a in refused)
        store = Store(fresh_postgres_url)
        assert sum(len(store.decisions(cid)) for cid in cids) == 1 and store.verify_chain().intact


def test_keys_never_appear_in_the_service_log_or_the_database(tmp_path: Path) -> None:
    """`sopagent serve` at debug level, keys in both headers, good, wrong-scope, wrong and revoked."""
    db = f"sqlite:///{tmp_path / 'keys.db'}"
    customer, operator, revoked = cli_key(db, "customer"), cli_key(db, "operator"), cli_key(db, "customer")
    store = Store(db)
    from sopagent.server.keys import authenticate, revoke_key

    revoked_key = authenticate(store, revoked)
    assert revoked_key is not None
    revoke_key(store, revoked_key.id)
    wrong = "sop_" + "x" * 40
    server = ServerProcess(db, "--log-level", "debug")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            bearer = {"Authorization": f"Bearer {customer}"}
            started = client.post("/v1/conversations", json={"policy": "card_services"}, headers=bearer)
            assert started.status_code == 201
            cid = started.json()["conversation_id"]
            assert client.post(f"/v1/conversations/{cid}/messages", json={"text": say(LOST)},
                               headers={"X-API-Key": customer}).status_code == 200
            assert client.post(f"/v1/conversations/{cid}/messages", json={"text": 5},
                               headers=bearer).status_code == 422
            assert client.post(f"/v1/conversations/{cid}/messages", json={"text": "hi"},
                               headers={"Authorization": f"Bearer {operator}"}).status_code == 403
            for key in (wrong, revoked):
                assert client.post("/v1/conversations", json={"policy": "card_services"},
                                   headers={"Authorization": f"Bearer {key}"}).status_code == 401
            assert client.get("/v1/pending", headers={"X-API-Key": operator}).status_code == 200
    finally:
        server.stop()
    log = server.proc.stdout.read().decode() if server.proc.stdout else ""
    assert "POST /v1/conversations" in log and "401" in log  # the access log was on
    for key in (customer, operator, revoked, wrong):
        assert key not in log
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*") if p.suffix != ".lock")
    for key in (customer, operator, revoked):
        assert key.encode() not in raw  # stored hashed


def test_a_client_that_sends_its_headers_too_slowly_is_cut_off(tmp_path: Path) -> None:
    import socket

    server = ServerProcess(f"sqlite:///{tmp_path / 'audit.db'}", "--header-timeout", "1")
    try:
        slow = [socket.create_connection(("127.0.0.1", server.port), timeout=10) for _ in range(20)]
        for connection in slow:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finished
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200  # others are served meanwhile
        for connection in slow:
            assert connection.recv(1024) == b""  # closed by the server after the header deadline
            connection.close()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as prompt:
            prompt.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            assert prompt.recv(1024).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()

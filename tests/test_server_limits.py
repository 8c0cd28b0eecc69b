"""Request limits on a real server (loopback): per key, per client address with wrong keys, and
long-polls per key, each answered 429 with Retry-After."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from server_harness import CARD, DISPUTE, ID_MARIA, LARGE_PAYMENT, Live, say, serve_in_thread

from sopagent.server.config import ServeConfig


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    config = ServeConfig(policies=[CARD], db=f"sqlite:///{tmp_path / 'audit.db'}", model="echo",
                         rate_limit="12/minute", failed_auth_limit="3/minute", long_polls_per_key=2)
    yield from serve_in_thread(config)


@pytest.fixture
def polled(tmp_path: Path) -> Iterator[Live]:
    config = ServeConfig(policies=[CARD], db=f"sqlite:///{tmp_path / 'audit.db'}", model="echo",
                         long_polls_per_key=2)
    yield from serve_in_thread(config)


def test_a_key_over_its_rate_gets_429_with_retry_after_and_other_keys_go_on(live: Live) -> None:
    with live.client() as client:
        answers = [client.post("/v1/conversations", json={"policy": "card_services"}) for _ in range(13)]
    assert [a.status_code for a in answers] == [201] * 12 + [429]
    assert int(answers[-1].headers["Retry-After"]) >= 1 and "slow down" in answers[-1].json()["error"]
    assert live.ops().get("/v1/pending").status_code == 200  # the operator key has its own count


def test_wrong_keys_from_one_address_are_throttled(live: Live) -> None:
    for attempt in range(3):
        assert live.client(f"sop_guess-{attempt}").get("/v1/pending").status_code == 401
    throttled = live.client("sop_guess-4").get("/v1/pending")
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) >= 1
    assert live.ops().get("/v1/pending").status_code == 429  # even a right key, from that address, waits
    assert httpx.get(f"{live.url}/healthz").status_code == 200


def test_long_polls_per_key_are_capped(polled: Live) -> None:
    live = polled
    with live.client() as client:
        cid = client.post("/v1/conversations", json={"policy": "card_services"}).json()["conversation_id"]
        for facts in (DISPUTE, ID_MARIA):
            client.post(f"/v1/conversations/{cid}/messages", json={"text": say(facts)})
        held = client.post(f"/v1/conversations/{cid}/messages", json={"text": say(LARGE_PAYMENT)}).json()
    url = held["delivery_url"]
    results: list[int] = []
    polls = [threading.Thread(target=lambda: results.append(live.client().get(url, params={"wait": 3}).status_code))
             for _ in range(2)]
    for poll in polls:
        poll.start()
    try:
        ready = threading.Event()
        while not ready.wait(0.05):  # both polls are inside the server once a third one is refused
            third = live.client().get(url, params={"wait": 0})
            if third.status_code == 429:
                ready.set()
        assert "long-polls open" in third.json()["error"]
    finally:
        for poll in polls:
            poll.join(10)
    assert results == [200, 200]
    assert live.client().get(url, params={"wait": 0}).status_code == 200  # places are given back

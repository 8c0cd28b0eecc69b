"""Long-poll flood against ``sopagent serve`` (loopback, echo model, SQLite): does one key's flood of
long-polls starve everyone else?

Starts ``sopagent serve``, holds one pending decision, then opens N long-polls on it from one key
(each capped by ``--long-polls-per-key``: the rest are answered 429 at once) while a second key keeps
asking ``/healthz`` and posting turns. Prints ``/healthz`` and turn latency before the flood and during
it, side by side in the same run, and how the flood's requests were answered.

    python benchmarks/long_poll_flood.py --polls 10000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from server_harness import ServerProcess, cli_key  # noqa: E402

N = "not_requested"
DISPUTE = {"intent": "dispute_payment", "handoff": N}
IDENTITY = {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": N}
LARGE = {"payment_date": "2026-11-15", "amount": 899.0, "merchant": "Techland Store", "handoff": N}
LOST = {"intent": "lost_or_stolen_card", "handoff": N}


async def probe(client: httpx.AsyncClient, key: str, seconds: float) -> tuple[list[float], list[float]]:
    """``/healthz`` and one-turn latencies (ms) of a well-behaved key for ``seconds``."""
    health, turns = [], []
    headers = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        (await client.get("/healthz")).raise_for_status()
        health.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        cid = (await client.post("/v1/conversations", json={"policy": "card_services"}, headers=headers)).json()[
            "conversation_id"]
        (await client.post(f"/v1/conversations/{cid}/messages", json={"text": json.dumps(LOST)},
                           headers=headers)).raise_for_status()
        turns.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(0.05)
    return health, turns


async def flood(url: str, key: str, polls: int, wait: float) -> collections.Counter[str]:
    """``polls`` concurrent long-polls of ``url`` with ``key``; how they were answered."""
    limits = httpx.Limits(max_connections=polls, max_keepalive_connections=0)
    outcomes: collections.Counter[str] = collections.Counter()
    async with httpx.AsyncClient(limits=limits, timeout=wait + 30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        async def one() -> None:
            try:
                outcomes[str((await client.get(url, params={"wait": wait})).status_code)] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1
        await asyncio.gather(*(one() for _ in range(polls)))
    return outcomes


def flood_process(url: str, key: str, polls: int, wait: float, results: "multiprocessing.Queue[dict]") -> None:
    """The flood in a process of its own, so its event loop never delays the probe's."""
    results.put(dict(asyncio.run(flood(url, key, polls, wait))))


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=10_000)
    parser.add_argument("--wait", type=float, default=20.0, help="seconds each long-poll asks to wait")
    parser.add_argument("--probe-seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db = f"sqlite:///{scratch}/audit.db"
        flooder, other = cli_key(db, "customer"), cli_key(db, "customer")
        server = ServerProcess(db)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                headers = {"Authorization": f"Bearer {flooder}"}
                cid = (await client.post("/v1/conversations", json={"policy": "card_services"},
                                         headers=headers)).json()["conversation_id"]
                for facts in (DISPUTE, IDENTITY):
                    await client.post(f"/v1/conversations/{cid}/messages", json={"text": json.dumps(facts)},
                                      headers=headers)
                held = (await client.post(f"/v1/conversations/{cid}/messages", json={"text": json.dumps(LARGE)},
                                          headers=headers)).json()
                quiet_health, quiet_turns = await probe(client, other, args.probe_seconds)
                results: multiprocessing.Queue[dict] = multiprocessing.Queue()
                flooding = multiprocessing.Process(target=flood_process, args=(
                    held["delivery_url"], flooder, args.polls, args.wait, results))
                flooding.start()
                await asyncio.sleep(2.0)  # let the flood open its connections
                busy_health, busy_turns = await probe(client, other, args.probe_seconds)
                outcomes = results.get(timeout=args.wait + 120)
                flooding.join(30)
        finally:
            server.stop()
    print(f"flood: {args.polls} long-polls from one key (in another process), answered {outcomes}")
    print(f"{'':24}{'quiet p50':>10}{'p95':>9}{'flood p50':>11}{'p95':>9}{'ratio p50':>11}")
    for name, quiet, busy in (("/healthz ms", quiet_health, busy_health), ("turn ms (other key)", quiet_turns,
                                                                          busy_turns)):
        print(f"{name:24}{p(quiet, 0.5):10.1f}{p(quiet, 0.95):9.1f}{p(busy, 0.5):11.1f}{p(busy, 0.95):9.1f}"
              f"{statistics.median(busy) / statistics.median(quiet):11.2f}")


if __name__ == "__main__":
    asyncio.run(main())

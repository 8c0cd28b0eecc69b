"""``sopagent serve`` under load on loopback, each figure measured in the same run as its baseline.

* ``load``: N concurrent conversations of T turns. Starts a throwaway PostgreSQL 15 (as the test suite
  does) and ``sopagent serve --workers W`` on it, drives every conversation concurrently with httpx, then
  checks that every turn was answered and recorded exactly once and that the audit chain verifies. Prints
  throughput, latency percentiles and the ratio of end-to-end time to model time:

  - model time = with the echo model, its fixed delay times the model calls each recorded turn made
    (exact); with a real model, the ``extract``/``choose`` laps the engine recorded (the model's own
    time: the wait in the process's FIFO model queue is recorded apart, as ``model_queue``);
  - overhead ratio = the run's wall time / (model time / worker processes): with one model per
    process the model is the bottleneck, so 1.0 means the service adds nothing around it.

  Exits 1 when a request failed, a turn was lost or recorded twice, a reply came from the fallback, or
  the audit chain does not verify.
* ``flood``: does one key's flood of long-polls starve everyone else? Starts ``sopagent serve`` (echo
  model, SQLite), holds one pending decision, then opens ``--polls`` long-polls on it from one key (at
  most ``sopagent serve --long-polls-per-key`` of them are held open, the rest are answered 429 at once)
  while a second key keeps asking ``/healthz`` and posting turns. Prints ``/healthz`` and turn latency
  before the flood and during it, side by side, and how the flood's requests were answered.

Run::

    .venv/bin/python benchmarks/serve_load.py load --model echo:0.05 --conversations 200 --turns 5 --workers 2
    flock /tmp/sopagent-model.lock .venv/bin/python benchmarks/serve_load.py load --model embedded \\
        --conversations 200 --turns 5 --workers 2 --model-timeout 7200
    .venv/bin/python benchmarks/serve_load.py flood --polls 10000
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
from typing import Callable

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from postgres import PostgresServer  # noqa: E402
from server_harness import ServerProcess, cli_key  # noqa: E402

N = "not_requested"
ECHO_SCRIPT = [{"intent": "lost_or_stolen_card", "handoff": N},
               {"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": N},
               {"answer": "unclear", "handoff": N}, {"answer": "yes", "handoff": N},
               {"intent": "nothing_else", "handoff": N}]
REAL_SCRIPT = ["Hi, I lost my card yesterday", "my card ends 4821 and I was born on 14 March 1985",
               "hmm, what does that mean?", "yes please block it", "no, that's all, thanks"]


async def conversation(client: httpx.AsyncClient, script: list[str], turns: int,
                       latencies: list[float], errors: list[str], decision_ids: list[int]) -> int:
    """One conversation; returns the number of turns answered."""
    response = await client.post("/v1/conversations", json={"policy": "card_services"})
    if response.status_code != 201:
        errors.append(f"start: {response.status_code} {response.text[:120]}")
        return 0
    cid = response.json()["conversation_id"]
    answered = 0
    for i in range(turns):
        started = time.perf_counter()
        response = await client.post(f"/v1/conversations/{cid}/messages", json={"text": script[i % len(script)]})
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            errors.append(f"turn {i + 1}: {response.status_code} {response.text[:120]}")
            return answered
        answered += 1
        decision_ids.append(response.json()["decision_id"])
        if response.json()["ended"]:
            break
    return answered


async def report_progress(latencies: list[float], expected: int, started: float, every_s: float = 30.0) -> None:
    """Print turns answered so far, the rate and an ETA to stderr every ``every_s`` seconds."""
    while True:
        await asyncio.sleep(every_s)
        done, elapsed = len(latencies), time.perf_counter() - started
        rate = done / elapsed
        eta = f", about {(expected - done) / rate / 60:.0f} min left" if rate else ""
        print(f"  {done}/{expected} turns answered in {elapsed / 60:.1f} min ({rate:.2f} turns/s{eta})",
              file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by statistics.quantiles."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def drive(url: str, key: str, conversations: int, turns: int, script: list[str],
                timeout_s: float) -> dict:
    """Run ``conversations`` conversations at once; their latencies, errors, decision ids and wall time."""
    latencies: list[float] = []
    errors: list[str] = []
    decision_ids: list[int] = []
    limits = httpx.Limits(max_connections=conversations, max_keepalive_connections=conversations)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                 timeout=timeout_s,
                                 limits=limits) as client:
        started = time.perf_counter()
        reporter = asyncio.create_task(report_progress(latencies, conversations * turns, started))
        answered = await asyncio.gather(*(conversation(client, script, turns, latencies, errors, decision_ids)
                                          for _ in range(conversations)))
        wall = time.perf_counter() - started
        reporter.cancel()
    return {"latencies": latencies, "errors": errors, "decision_ids": decision_ids, "wall": wall,
            "answered": sum(answered)}


def measure_load(args: argparse.Namespace) -> int:
    """``load``: concurrent conversations on PostgreSQL; 0 when every turn was answered and recorded once."""
    from sopagent import Store
    from sopagent.server.keys import create_key

    pg = PostgresServer()
    try:
        db = pg.create_database()
        store = Store(db)
        _, key = create_key(store, "customer", "load")
        model_args = [] if args.model == "embedded" else [args.model]
        extra = ["--workers", str(args.workers), "--model-timeout", str(args.model_timeout),
                 "--turn-wait", str(args.model_timeout)]
        if args.threads:
            extra += ["--threads", str(args.threads)]
        server = ServerProcess(db, *extra, model=model_args[0]) if model_args else _embedded(db, extra)
        script = ([json.dumps(m) for m in ECHO_SCRIPT] if args.model.startswith("echo") else REAL_SCRIPT)
        try:
            run = asyncio.run(drive(server.url, key, args.conversations, args.turns, script,
                                   args.model_timeout + 60))
        finally:
            server.stop()
        decisions = store.decisions()
        recorded = [d.id for d in decisions]
        if args.model.startswith("echo"):  # exact: the fixed delay times the model calls each turn made
            delay_ms = 1000 * float(args.model.partition(":")[2] or 0)
            model_ms = [delay_ms * (1 + (d.chosen_by == "model")) for d in decisions]
        else:  # the engine's extract/choose laps: the model's own time, the queue wait is apart
            model_ms = [sum(v for k, v in json.loads(d.latency_json).items() if k in ("extract", "choose"))
                        for d in decisions]
        queue_ms = [json.loads(d.latency_json).get("model_queue", 0.0) for d in decisions]
        once = sorted(run["decision_ids"]) == sorted(recorded) and len(set(recorded)) == len(recorded)
        chain = store.verify_chain()
        lat = run["latencies"]
        total_model = sum(model_ms) / 1000
        print(f"model {args.model}, {args.workers} workers on PostgreSQL, {args.conversations} conversations x "
              f"{args.turns} turns (concurrent)")
        print(f"turns answered {run['answered']}, recorded {len(recorded)}, recorded exactly once: {once}, "
              f"errors {len(run['errors'])}, {chain.describe()}")
        for error in run["errors"][:5]:
            print(f"  error: {error}")
        print(f"wall {run['wall']:.2f} s, throughput {run['answered'] / run['wall']:.1f} turns/s")
        print(f"latency p50 {percentile(lat, 50) * 1000:.0f} ms, p95 {percentile(lat, 95) * 1000:.0f} ms, "
              f"p99 {percentile(lat, 99) * 1000:.0f} ms")
        fallbacks = sum(d.chosen_by == "fallback" for d in decisions)  # a model failure or timeout
        print(f"wait in the model queue: p50 {percentile(queue_ms, 50):.0f} ms, max {max(queue_ms, default=0):.0f} ms; "
              f"fallback replies (model failed or timed out) {fallbacks}")
        busy = total_model / args.workers
        print(f"model time {total_model:.2f} s in all ({1000 * total_model / max(len(recorded), 1):.0f} ms/turn); "
              f"wall / model busy time per worker = {run['wall'] / busy:.3f}" if busy else "no model time recorded")
        ok = once and chain.intact and not run["errors"] and not fallbacks and run["answered"] == len(recorded)
        return 0 if ok else 1
    finally:
        pg.stop()


def _embedded(db: str, extra: list[str]) -> ServerProcess:
    """``sopagent serve`` with the embedded model (no --model): a ServerProcess whose model is the default."""
    return ServerProcess(db, *extra, model="", start_timeout_s=400)


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
            """One long-poll; count its status code or its error."""
            try:
                outcomes[str((await client.get(url, params={"wait": wait})).status_code)] += 1
            except httpx.HTTPError as exc:
                outcomes[type(exc).__name__] += 1
        await asyncio.gather(*(one() for _ in range(polls)))
    return outcomes


def flood_process(url: str, key: str, polls: int, wait: float, results: "multiprocessing.Queue[dict]") -> None:
    """The flood in a process of its own, so its event loop never delays the probe's."""
    results.put(dict(asyncio.run(flood(url, key, polls, wait))))


def nearest_rank(values: list[float], fraction: float) -> float:
    """The sorted value at ``fraction`` (0-1) of the way up, or NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else float("nan")


async def flood_run(args: argparse.Namespace) -> None:
    """Probe a quiet server, then the same server under the flood, and print both side by side."""
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
        print(f"{name:24}{nearest_rank(quiet, 0.5):10.1f}{nearest_rank(quiet, 0.95):9.1f}"
              f"{nearest_rank(busy, 0.5):11.1f}{nearest_rank(busy, 0.95):9.1f}"
              f"{statistics.median(busy) / statistics.median(quiet):11.2f}")


def measure_flood(args: argparse.Namespace) -> None:
    """``flood``: /healthz and turn latency of one key, quiet and while another key floods long-polls."""
    asyncio.run(flood_run(args))


def main() -> int:
    """Parse the command line, run one measurement and return its exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    text = "concurrent conversations on sopagent serve and PostgreSQL: throughput, latency, wall / model time"
    load = commands.add_parser("load", help=text, description=text)
    load.add_argument("--conversations", type=int, default=200, help="conversations, all at once")
    load.add_argument("--turns", type=int, default=5, help="turns per conversation")
    load.add_argument("--workers", type=int, default=2, help="sopagent serve --workers")
    load.add_argument("--model", default="echo:0.05", help="echo:DELAY_S, a GGUF path, or 'embedded'")
    load.add_argument("--threads", type=int, default=None,
                      help="CPU threads of the model per worker (default: sopagent serve's, cores / workers)")
    load.add_argument("--model-timeout", type=float, default=600.0,
                      help="seconds a turn may wait for the model, queue included (the client waits 60 s more)")
    text = "one key's flood of long-polls: /healthz and turn latency of another key, quiet and during it"
    flood_parser = commands.add_parser("flood", help=text, description=text)
    flood_parser.add_argument("--polls", type=int, default=10_000, help="long-polls the flooding key opens at once")
    flood_parser.add_argument("--wait", type=float, default=20.0, help="seconds each long-poll asks to wait")
    flood_parser.add_argument("--probe-seconds", type=float, default=8.0,
                              help="seconds the other key is probed, quiet and again during the flood")
    args = parser.parse_args()
    measures: dict[str, Callable[[argparse.Namespace], int | None]] = {"load": measure_load, "flood": measure_flood}
    return measures[args.command](args) or 0


if __name__ == "__main__":
    raise SystemExit(main())

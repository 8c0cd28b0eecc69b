"""Load test of ``sopagent serve``: N concurrent conversations of T turns on loopback.

Starts a throwaway PostgreSQL 15 (as the test suite does) and ``sopagent serve --workers W`` on it,
drives every conversation concurrently with httpx, then checks that every turn was answered and
recorded exactly once and that the audit chain verifies. Prints throughput, latency percentiles and
the ratio of end-to-end time to model time measured in the same run:

* model time = with the echo model, its fixed delay times the model calls each recorded turn made
  (exact); with a real model, the ``extract``/``choose`` laps the engine recorded (the model's own
  time: the wait in the process's FIFO model queue is recorded apart, as ``model_queue``);
* overhead ratio = the run's wall time / (model time / worker processes): with one model per
  process the model is the bottleneck, so 1.0 means the service adds nothing around it.

    python benchmarks/serve_load.py --model echo:0.05 --conversations 200 --turns 5 --workers 2
    flock /tmp/sopagent-model.lock python benchmarks/serve_load.py --model embedded --conversations 200 \
        --turns 5 --workers 2 --model-timeout 7200
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from postgres import PostgresServer  # noqa: E402
from server_harness import ServerProcess  # noqa: E402

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="echo:0.05", help="echo:DELAY_S, a GGUF path, or 'embedded'")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the model per worker (default: sopagent serve's, cores / workers)")
    parser.add_argument("--model-timeout", type=float, default=600.0,
                        help="seconds a turn may wait for the model, queue included (the client waits 60 s more)")
    args = parser.parse_args()

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


if __name__ == "__main__":
    raise SystemExit(main())

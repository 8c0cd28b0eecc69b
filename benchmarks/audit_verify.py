"""Audit chain verification speed: seed N chained rows into a SQLite file, then time `verify`.

    .venv/bin/python benchmarks/audit_verify.py --rows 1000000

Seeding writes decisions (and one operator action per 100 decisions) with executemany, hashed by
the same functions the store uses. It then verifies chain positions 1..--prefix-rows sequentially
with the previous implementation (the baseline: ChainRecord objects per row, dicts encoded with
sort_keys) and with the new ones, interleaved and repeated, and prints rows/s, the projected time
for 1M rows and the speed-up; then the whole chain with `Store.verify_chain` (parallel workers).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Callable

from sqlalchemy.engine import Engine

from sopagent.store import Store
from sopagent.store.chain import KIND_FIELDS, commitment_from, hash_from, merge_by_seq, record_columns, verify_rows
from sopagent.store.tables import GENESIS_HASH, utcnow
from sopagent.store.verify import (
    WINDOW,
    chain_head,
    erased_allowed,
    merged_records,
    merged_rows,
    stored_policy_digests,
    verify_raw,
    verify_windows,
)


def seed(path: Path, rows: int, batch: int = 20_000) -> float:
    """Write ``rows`` chained records (decisions, with an operator action every 100th) and the chain head."""
    store = Store(f"sqlite:///{path}")
    version = store.policy_version("bench", "1.0", "# bench policy\n", _sha("# bench policy\n"),
                                   "responses: []\n", _sha("responses: []\n"))
    digest = store.policy_digest_of(version)
    store.engine.dispose()
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    now = utcnow()
    conversations = max(1, rows // 10)
    conn.executemany("INSERT INTO conversation (id, policy_name, policy_version_id, customer_ref, metadata_json, "
                     "step, status, known_json, turns, revision, created_at, updated_at) "
                     "VALUES (?, 'bench', ?, ?, '{}', 'welcome', 'closed', '{}', 10, 10, ?, ?)",
                     ((f"c{i}", version.id, f"cust-{i}", now, now) for i in range(conversations)))
    d_cols = record_columns("decision")
    a_cols = record_columns("action")
    d_sql = f"INSERT INTO decision ({', '.join(d_cols)}) VALUES ({', '.join('?' * len(d_cols))})"
    a_sql = f"INSERT INTO operatoraction ({', '.join(a_cols)}) VALUES ({', '.join('?' * len(a_cols))})"
    d_public, d_personal = KIND_FIELDS["decision"]
    a_public, a_personal = KIND_FIELDS["action"]
    prev = GENESIS_HASH
    decisions: list[tuple] = []
    actions: list[tuple] = []
    seq = 0
    d_id = a_id = 0
    while seq < rows:
        seq += 1
        salt = secrets.token_hex(16)
        if seq % 100 == 0:
            a_id += 1
            public = dict(created_at=now, operator="ana", action="approve", conversation_id=f"c{seq % conversations}",
                          decision_id=d_id, reason="checked", response_id="fee_refunded", next_step="anything_else",
                          detail_json="{}")
            personal = dict(slots_json='{"amount": "25.00"}', sent_text="We refunded your fee of 25.00.")
            commitment = commitment_from(salt, personal)
            values = [public[n] for n in a_public] + [personal[n] for n in a_personal]
            row_hash = hash_from(prev, "action", seq, commitment, public)
            actions.append((a_id, seq, prev, row_hash, salt, commitment, None, *values))
        else:
            d_id += 1
            public = dict(conversation_id=f"c{seq % conversations}", turn=seq % 10 + 1, created_at=now,
                          policy_version_id=version.id, policy_sha256=digest, model_name="bench", step="fee_refund",
                          chosen_index=1, response_id="fee_refunded", chosen_by="model", confidence=0.83,
                          status="sent", next_step="anything_else", error=None,
                          latency_json='{"extract": 180.2, "choose": 41.5}')
            personal = dict(customer_text=f"please refund the late fee on my card, message {seq}",
                            facts_json='{"fee_type": "late payment", "handoff": "not_requested"}',
                            options_json=json.dumps([{"response_id": "fee_refunded", "next_step": "anything_else",
                                                      "slots": {"amount": "25.00"}, "probability": 0.83}]),
                            reply_text="We refunded your late payment fee of 25.00.",
                            sent_text="We refunded your late payment fee of 25.00.")
            commitment = commitment_from(salt, personal)
            values = [public[n] for n in d_public] + [personal[n] for n in d_personal]
            row_hash = hash_from(prev, "decision", seq, commitment, public)
            decisions.append((d_id, seq, prev, row_hash, salt, commitment, None, *values))
        prev = row_hash
        if len(decisions) >= batch:
            conn.executemany(d_sql, decisions)
            decisions.clear()
    conn.executemany(d_sql, decisions)
    conn.executemany(a_sql, actions)
    conn.execute("UPDATE chainhead SET last_hash = ?, length = ? WHERE id = 1", (prev, seq))
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


def orm_verify(store: Store, limit: int) -> tuple[float, int]:
    """The ORM path (Decision / OperatorAction objects) over the first ``limit`` rows."""
    started = time.perf_counter()
    rows = islice(merge_by_seq(store.iter_decisions(), store.iter_actions()), limit)
    report = verify_rows(rows, stored_policy_digests(store.engine), erased_allowed(store.engine), None)
    _ = chain_head(store.engine)
    assert report.intact, report.describe()
    return time.perf_counter() - started, report.checked


def prefix_paths(engine: Engine, rows: int) -> dict[str, Callable[[], int]]:
    """Sequential verifiers of chain positions 1..rows, each returning the rows it checked.

    ``records`` is the previous implementation (raw tuples made into ChainRecord objects, dicts
    encoded by canonical with sort_keys, per row), kept as the baseline; ``per-row codec`` checks
    raw tuples one at a time with the template codec; ``bulk`` checks whole windows (verify_chain
    uses windows of WINDOW positions; 20,000 shows what larger windows cost in CPU caches).
    """
    digests, allowed = stored_policy_digests(engine), erased_allowed(engine)

    def records() -> int:
        report = verify_rows(merged_records(engine, lo=1, hi=rows), digests, allowed, None)
        assert report.intact, report.describe()
        return report.checked

    def per_row() -> int:
        result = verify_raw(merged_rows(engine, lo=1, hi=rows), digests, allowed, None)
        assert result.report.intact, result.report.describe()
        return result.report.checked

    def bulk(window: int) -> Callable[[], int]:
        def run() -> int:
            result = verify_windows(engine, digests, allowed, None, end=rows, window=window)
            assert result.report.intact, result.report.describe()
            return result.report.checked

        return run

    return {"records (previous)": records, "per-row codec": per_row, "bulk, 20,000 windows": bulk(20_000),
            f"bulk, {WINDOW:,} windows": bulk(WINDOW)}


def timed(run: Callable[[], int]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, rows) of one run."""
    wall, cpu = time.perf_counter(), time.process_time()
    rows = run()
    return time.perf_counter() - wall, time.process_time() - cpu, rows


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def main() -> None:
    """Seed, verify, print figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--prefix-rows", type=int, default=200_000,
                        help="rows verified sequentially by each implementation (old and new)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each prefix implementation (best kept)")
    parser.add_argument("--orm-rows", type=int, default=0, help="also time the ORM path over this many rows")
    parser.add_argument("--db", help="reuse (or create) this SQLite file instead of a temporary one")
    args = parser.parse_args()
    if args.db:
        run(Path(args.db), args)
        return
    with tempfile.TemporaryDirectory(prefix="sopagent-bench-") as folder:  # removed afterwards (~1 GB per 1M)
        run(Path(folder) / "audit.db", args)


def run(path: Path, args: argparse.Namespace) -> None:
    """Seed ``path`` unless it exists, then verify and print figures."""
    if not path.exists():
        seconds = seed(path, args.rows)
        print(f"seeded {args.rows:,} chained rows in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s); "
              f"file {path.stat().st_size / 1e6:.0f} MB")
    store = Store(f"sqlite:///{path}")
    print(f"cpu count {os.cpu_count()}; load average at start {os.getloadavg()[0]:.2f}")
    paths = prefix_paths(store.engine, args.prefix_rows)
    best: dict[str, tuple[float, float, int]] = {}
    for _ in range(args.repeat):  # interleaved, so that load changes hit every implementation alike
        for name, verify in paths.items():
            result = timed(verify)
            if name not in best or result[0] < best[name][0]:
                best[name] = result
    base_wall = best["records (previous)"][0]
    print(f"sequential, chain positions 1..{args.prefix_rows:,}, best of {args.repeat}:")
    for name, (wall, cpu, rows) in best.items():
        print(f"  {name:21} {wall:6.2f} s wall {cpu:6.2f} s cpu  {rows / wall:9,.0f} rows/s  "
              f"{1e6 / (rows / wall):5.1f} s per 1M  speed-up {base_wall / wall:4.2f}x")
    started = time.perf_counter()
    report = store.verify_chain()
    full = time.perf_counter() - started
    print(f"Store.verify_chain (bulk windows, {min(os.cpu_count() or 1, 8)} workers): {report.describe()}")
    print(f"  {report.checked:,} rows in {full:.2f} s = {report.checked / full:,.0f} rows/s; "
          f"projected {1e6 / (report.checked / full):.1f} s per 1M")
    if args.orm_rows:
        orm_s, orm_rows = orm_verify(store, min(args.orm_rows, report.checked))
        print(f"ORM path: {orm_rows:,} rows in {orm_s:.2f} s = {orm_rows / orm_s:,.0f} rows/s")
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

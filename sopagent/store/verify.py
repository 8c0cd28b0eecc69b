"""Fast chain verification: core SELECTs of plain tuples in large batches, no ORM objects.

It computes exactly the hashes of :mod:`sopagent.store.chain` (the same field lists, the same
``commitment_from`` / ``hash_from``), so a report here equals the ORM path's report.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from sopagent.store.chain import ChainRecord, ChainReport, policy_digest, record_columns, record_from_tuple, verify_rows
from sopagent.store.tables import GENESIS_HASH

PARALLEL_FROM = 200_000
"""Chains at least this long are verified in parallel worker processes by default."""

TABLES = {"decision": "decision", "action": "operatoraction"}
"""Chain kind -> SQL table name."""


def stored_policy_digests(engine: Engine) -> dict[int, str]:
    """policy_version id -> digest recomputed from the stored source, catalog and helper modules.

    A snapshot whose text no longer matches its recorded hashes gets the digest ``altered``.
    """
    digests: dict[int, str] = {}
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, source, source_sha256, catalog_source, catalog_sha256, "
                                 "modules_json, modules_sha256 FROM policyversion")).all()
    for vid, source, source_sha, catalog, catalog_sha, modules, modules_sha in rows:
        ok = (_sha(source) == source_sha and _sha(catalog) == catalog_sha
              and (not modules_sha or modules_digest(modules) == modules_sha))
        digests[vid] = policy_digest(source_sha, catalog_sha, modules_sha or "") if ok else "altered"
    return digests


def modules_digest(modules_json: str | None) -> str:
    """sha256 over the helper modules' sources (name -> source), the part of a snapshot that is code."""
    modules = json.loads(modules_json or "{}").get("modules", {})
    if not modules:
        return ""
    return _sha(json.dumps({name: info["source"] for name, info in modules.items()}, sort_keys=True))


def erased_allowed(engine: Engine) -> set[tuple[str, int]]:
    """(kind, id) of every row that a chained erase or purge action lists as cleared."""
    allowed: set[tuple[str, int]] = set()
    with engine.connect() as conn:
        for (detail,) in conn.execute(text(
                "SELECT detail_json FROM operatoraction WHERE action IN ('erase', 'purge')")):
            data = json.loads(detail or "{}")
            allowed.update(("decision", int(i)) for i in data.get("decisions", []))
            allowed.update(("action", int(i)) for i in data.get("actions", []))
    return allowed


def chain_head(engine: Engine) -> tuple[str, int] | None:
    """(last_hash, length) of the chain head row, if there is one."""
    with engine.connect() as conn:
        row = conn.execute(text("SELECT last_hash, length FROM chainhead WHERE id = 1")).first()
    return (row[0], row[1]) if row else None


def iter_records(engine: Engine, kind: str, batch: int = 50_000, lo: int = 1,
                 hi: int | None = None) -> Iterator[ChainRecord]:
    """Rows of one chained table with ``lo <= seq <= hi`` in seq order, as records, ``batch`` at a time.

    Uses the driver's own cursor (plain tuples): the seq bounds are integers we format ourselves.
    """
    names = ", ".join(record_columns(kind))
    upper = f" AND seq <= {int(hi)}" if hi is not None else ""
    last = int(lo) - 1
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            while True:
                cursor.execute(f"SELECT {names} FROM {TABLES[kind]} WHERE seq > {last}{upper} "
                               f"ORDER BY seq LIMIT {int(batch)}")
                rows = cursor.fetchall()
                if not rows:
                    return
                for values in rows:
                    yield record_from_tuple(kind, values)
                last = rows[-1][1]
        finally:
            cursor.close()


def _merged(engine: Engine, batch: int, lo: int = 1, hi: int | None = None) -> Iterator[ChainRecord]:
    return heapq.merge(iter_records(engine, "decision", batch, lo, hi), iter_records(engine, "action", batch, lo, hi),
                       key=_seq)


def _seq(record: ChainRecord) -> int:
    return record.seq


@dataclass(frozen=True)
class _RangeResult:
    report: ChainReport
    first: tuple[str, int | None, int, str] | None
    """kind, id, seq and prev_hash of the range's first row."""
    last_hash: str | None
    count: int


def _verify_range(url: str, lo: int, hi: int, digests: dict[int, str], allowed: set[tuple[str, int]],
                  batch: int) -> _RangeResult:
    """Verify chain positions lo..hi on its own connection (run in a worker process)."""
    engine = create_engine(url)
    try:
        first: list[tuple[str, int | None, int, str]] = []
        last: list[str] = []
        count = [0]

        def watched() -> Iterator[ChainRecord]:
            for record in _merged(engine, batch, lo, hi):
                if not first:
                    first.append((record.kind, record.id, record.seq, record.prev_hash))
                count[0] += 1
                yield record
                last[:] = [record.hash]

        report = verify_rows(watched(), digests, allowed, None, start=lo,
                             prev_hash=GENESIS_HASH if lo == 1 else None)
        return _RangeResult(report, first[0] if first else None, last[0] if last else None, count[0])
    finally:
        engine.dispose()


def verify_engine(engine: Engine, batch: int = 50_000, workers: int | None = None) -> ChainReport:
    """Verify the whole chain and the policy snapshots of an audit database.

    Each row is checked against its own recorded ``prev_hash``, so the chain splits into ranges
    of positions checked in parallel worker processes (``workers``; default: one per CPU for
    chains over :data:`PARALLEL_FROM` rows), and the links between ranges are checked here. The
    report is the same as a single sequential pass: the first broken link, by chain position.
    """
    digests = stored_policy_digests(engine)
    allowed = erased_allowed(engine)
    head = chain_head(engine)
    length = max(_max_seq(engine), head[1] if head else 0)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if length >= PARALLEL_FROM else 1
    if workers <= 1 or length < 2 * workers or "fork" not in mp.get_all_start_methods():
        return verify_rows(_merged(engine, batch), digests, allowed, head)
    url = engine.url.render_as_string(hide_password=False)
    size = -(-length // workers)
    bounds = [(lo, min(lo + size - 1, length)) for lo in range(1, length + 1, size)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
        results = list(pool.map(_verify_range, [url] * len(bounds), [lo for lo, _ in bounds],
                                [hi for _, hi in bounds], [digests] * len(bounds), [allowed] * len(bounds),
                                [batch] * len(bounds)))
    prev = GENESIS_HASH
    total = 0
    for result in results:  # the links between ranges, then each range's own report, in chain order
        if result.first is not None:
            kind, row_id, seq, first_prev = result.first
            if seq != total + 1:
                missing = "a record was deleted or inserted before it" if seq > total + 1 else "duplicate position"
                return ChainReport(False, total + 1, kind, row_id, seq,
                                   f"expected chain position {total + 1}, found {seq}: {missing}")
            if first_prev != prev:
                return ChainReport(False, total + 1, kind, row_id, seq, "its prev_hash does not match the record "
                                   "before it (deleted, inserted or reordered)")
        if not result.report.intact:
            return result.report
        total += result.count
        if result.last_hash is not None:
            prev = result.last_hash
    if head is not None and (head[0] != prev or head[1] != total):
        return ChainReport(False, total, "chain_head", None, None,
                           f"the chain head says {head[1]} records ending {head[0][:12]}, found {total} "
                           f"ending {prev[:12]}: records were removed from the end")
    return ChainReport(True, total)


def _max_seq(engine: Engine) -> int:
    with engine.connect() as conn:
        values = [conn.execute(text(f"SELECT MAX(seq) FROM {name}")).scalar() for name in TABLES.values()]
    return max((v or 0) for v in values)


def _sha(value: str | None) -> str:
    return hashlib.sha256((value or "").encode("utf-8")).hexdigest()


__all__ = ["TABLES", "chain_head", "erased_allowed", "iter_records", "modules_digest", "stored_policy_digests",
           "verify_engine"]

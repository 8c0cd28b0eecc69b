"""Fast chain verification: core SELECTs of plain tuples in large batches, no ORM objects.

It computes exactly the hashes of :mod:`sopagent.store.chain` (the same field lists, the same
``commitment_from`` / ``hash_from``), so a report here equals the ORM path's report.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from typing import Iterator

from sqlalchemy import column, select, table, text
from sqlalchemy.engine import Engine

from sopagent.store.chain import ChainRecord, ChainReport, policy_digest, record_columns, record_from_tuple, verify_rows

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


def iter_records(engine: Engine, kind: str, batch: int = 50_000) -> Iterator[ChainRecord]:
    """Every row of one chained table in seq order, as records, read ``batch`` rows at a time."""
    names = record_columns(kind)
    tbl = table(TABLES[kind], *(column(n) for n in names))
    query = select(*(tbl.c[n] for n in names)).order_by(tbl.c.seq).limit(batch)
    last = -1
    with engine.connect() as conn:
        while True:
            rows = conn.execute(query.where(tbl.c.seq > last)).all()
            if not rows:
                return
            for values in rows:
                yield record_from_tuple(kind, tuple(values))
            last = rows[-1][1]


def verify_engine(engine: Engine, batch: int = 50_000) -> ChainReport:
    """Verify the whole chain and the policy snapshots of an audit database."""
    digests = stored_policy_digests(engine)
    allowed = erased_allowed(engine)
    head = chain_head(engine)
    rows = heapq.merge(iter_records(engine, "decision", batch), iter_records(engine, "action", batch),
                       key=lambda record: record.seq)
    return verify_rows(rows, digests, allowed, head)


def _sha(value: str | None) -> str:
    return hashlib.sha256((value or "").encode("utf-8")).hexdigest()


__all__ = ["TABLES", "chain_head", "erased_allowed", "iter_records", "modules_digest", "stored_policy_digests",
           "verify_engine"]

"""Fast chain verification: windows of chain positions read as plain tuples and checked in bulk.

It computes exactly the hashes of :mod:`sopagent.store.chain`: the canonical texts come from
:class:`~sopagent.store.chain.RowCodec` (derived from the same field lists, equal to
``canonical``), and a row that does not check out is re-checked by the reference
:func:`~sopagent.store.chain.verify_rows`, so a report here equals the ORM path's report.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Iterable, Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from sopagent.store.bulk import window_ok
from sopagent.store.chain import (
    ChainRecord,
    ChainReport,
    RowCodec,
    head_report,
    policy_digest,
    record_columns,
    record_from_tuple,
    verify_rows,
)
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


def iter_rows(engine: Engine, kind: str, batch: int = 50_000, lo: int = 1,
              hi: int | None = None) -> Iterator[tuple[Any, ...]]:
    """Raw rows (columns in :func:`record_columns` order) of one chained table with ``lo <= seq <= hi``.

    In seq order, ``batch`` at a time, through the driver's own cursor (plain tuples): the seq
    bounds are integers we format ourselves.
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
                yield from rows
                last = rows[-1][1]
        finally:
            cursor.close()


def iter_records(engine: Engine, kind: str, batch: int = 50_000, lo: int = 1,
                 hi: int | None = None) -> Iterator[ChainRecord]:
    """Like :func:`iter_rows`, as :class:`ChainRecord` objects (what :func:`verify_rows` reads)."""
    for values in iter_rows(engine, kind, batch, lo, hi):
        yield record_from_tuple(kind, values)


def merged_records(engine: Engine, batch: int = 50_000, lo: int = 1,
                   hi: int | None = None) -> Iterator[ChainRecord]:
    """Decisions and operator actions with ``lo <= seq <= hi`` as records, merged in seq order."""
    return heapq.merge(iter_records(engine, "decision", batch, lo, hi),
                       iter_records(engine, "action", batch, lo, hi), key=_seq)


def merged_rows(engine: Engine, batch: int = 50_000, lo: int = 1,
                hi: int | None = None) -> Iterator[tuple[Any, ...]]:
    """Decisions and operator actions with ``lo <= seq <= hi`` as raw rows, merged in seq order."""
    return heapq.merge(iter_rows(engine, "decision", batch, lo, hi), iter_rows(engine, "action", batch, lo, hi),
                       key=itemgetter(1))


def _seq(record: ChainRecord) -> int:
    return record.seq


CODECS = {kind: RowCodec.of(kind) for kind in TABLES}
"""Chain kind -> the codec of its raw rows."""
_BY_WIDTH = {codec.width: codec for codec in CODECS.values()}
assert len(_BY_WIDTH) == len(CODECS), "raw rows of different kinds must differ in width"
_DECISION_COLUMNS = record_columns("decision")
_VERSION_AT = _DECISION_COLUMNS.index("policy_version_id")
_DIGEST_AT = _DECISION_COLUMNS.index("policy_sha256")


@dataclass(frozen=True)
class RawResult:
    """What :func:`verify_raw` found: the report, and the first and last rows it read."""

    report: ChainReport
    first: tuple[str, int | None, int, str] | None
    """kind, id, seq and prev_hash of the first row."""
    last_hash: str | None
    """hash of the last row that checked out (None when there was none)."""
    count: int
    """Rows that checked out."""


def verify_raw(rows: Iterable[tuple[Any, ...]], policy_digests: dict[int, str],
               erased_allowed: set[tuple[str, int]], head: tuple[str, int] | None, *, start: int = 1,
               prev_hash: str | None = GENESIS_HASH) -> RawResult:
    """:func:`verify_rows` over raw rows of both kinds (see :func:`merged_rows`), without per-row objects.

    The canonical texts come from :class:`RowCodec`. A row that does not check out here is handed,
    on its own, to :func:`verify_rows`, and its report is the one returned: a broken chain is
    described exactly as the reference path describes it.
    """
    sha256 = hashlib.sha256
    by_width = _BY_WIDTH
    decision = CODECS["decision"]
    version_at, digest_at = _VERSION_AT, _DIGEST_AT
    prev = prev_hash
    checked = start - 1
    first: tuple[str, int | None, int, str] | None = None
    for row in rows:
        checked += 1
        codec = by_width[len(row)]
        if first is None:
            first = (codec.kind, row[0], row[1], row[2])
            if prev is None:
                prev = row[2]
        # row: id, seq, prev_hash, hash, salt, commitment, erased_at, public..., personal...
        texts = codec.texts([row]) if row[1] == checked and row[2] == prev else None
        ok = texts is not None and prev is not None
        if texts is not None and prev is not None:
            if row[6] is None:
                ok = row[4] is not None and sha256((row[4] + texts[0]).encode()).hexdigest() == row[5]
            else:
                ok = (codec.kind, row[0] or 0) in erased_allowed
            ok = ok and sha256((prev + texts[1]).encode()).hexdigest() == row[3]
            if ok and codec is decision:
                digest = policy_digests.get(row[version_at])
                ok = digest is not None and digest == row[digest_at]
        if not ok:
            report = verify_rows([record_from_tuple(codec.kind, row)], policy_digests, erased_allowed, None,
                                 start=checked, prev_hash=prev)
            if not report.intact:
                return RawResult(report, first, prev, checked - start)
        prev = row[3]
    count = checked - start + 1
    return RawResult(head_report(head, prev, checked), first, prev if count else None, count)


WINDOW = 1_000
"""Chain positions checked together in bulk (see :mod:`sopagent.store.bulk`)."""


def _fetch(cursor: Any, kind: str, lo: int, hi: int) -> list[tuple[Any, ...]]:
    """Raw rows of one table with lo <= seq <= hi (from the start of the table when lo is 1), in seq order."""
    lower = f"seq >= {int(lo)} AND " if lo > 1 else ""
    cursor.execute(f"SELECT {', '.join(record_columns(kind))} FROM {TABLES[kind]} "
                   f"WHERE {lower}seq <= {int(hi)} ORDER BY seq")
    return cursor.fetchall()


def verify_windows(engine: Engine, policy_digests: dict[int, str], erased_allowed: set[tuple[str, int]],
                   head: tuple[str, int] | None, *, start: int = 1, end: int,
                   prev_hash: str | None = GENESIS_HASH, window: int = WINDOW) -> RawResult:
    """Verify chain positions ``start``..``end`` a window at a time; the same report as :func:`verify_rows`.

    Each window is read with two SELECTs (decisions, operator actions) and checked in bulk
    (:func:`sopagent.store.bulk.window_ok`); a window that does not check out there is checked
    again row by row (:func:`verify_raw`), which finds and names the first broken row. Rows past
    ``end`` are left to the caller (the chain head check, or the next range).
    """
    prev = prev_hash
    checked = start - 1
    first: tuple[str, int | None, int, str] | None = None
    with engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            for lo in range(start, end + 1, window):
                hi = min(lo + window - 1, end)
                decisions, actions = _fetch(cursor, "decision", lo, hi), _fetch(cursor, "action", lo, hi)
                ok = window_ok(decisions, actions, checked + 1, prev, policy_digests, erased_allowed, CODECS)
                if ok is None:
                    rows = heapq.merge(decisions, actions, key=itemgetter(1))
                    result = verify_raw(rows, policy_digests, erased_allowed, None, start=checked + 1,
                                        prev_hash=prev)
                    first = first or result.first
                    if not result.report.intact:
                        return RawResult(result.report, first, result.last_hash, checked + result.count - start + 1)
                    count, last = result.count, result.last_hash
                else:
                    first = first or ok.first
                    count, last = ok.count, ok.last_hash
                checked += count
                if count:
                    prev = last
        finally:
            cursor.close()
    count = checked - start + 1
    return RawResult(head_report(head, prev, checked), first, prev if count else None, count)


def _verify_range(url: str, lo: int, hi: int, digests: dict[int, str], allowed: set[tuple[str, int]],
                  window: int) -> RawResult:
    """Verify chain positions lo..hi on its own connection (run in a worker process)."""
    engine = create_engine(url)
    try:
        return verify_windows(engine, digests, allowed, None, start=lo, end=hi,
                              prev_hash=GENESIS_HASH if lo == 1 else None, window=window)
    finally:
        engine.dispose()


def verify_engine(engine: Engine, window: int = WINDOW, workers: int | None = None) -> ChainReport:
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
        return verify_windows(engine, digests, allowed, head, end=length, window=window).report
    url = engine.url.render_as_string(hide_password=False)
    size = -(-length // workers)
    bounds = [(lo, min(lo + size - 1, length)) for lo in range(1, length + 1, size)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("fork")) as pool:
        results = list(pool.map(_verify_range, [url] * len(bounds), [lo for lo, _ in bounds],
                                [hi for _, hi in bounds], [digests] * len(bounds), [allowed] * len(bounds),
                                [window] * len(bounds)))
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
    return head_report(head, prev, total)


def _max_seq(engine: Engine) -> int:
    with engine.connect() as conn:
        values = [conn.execute(text(f"SELECT MAX(seq) FROM {name}")).scalar() for name in TABLES.values()]
    return max((v or 0) for v in values)


def _sha(value: str | None) -> str:
    return hashlib.sha256((value or "").encode("utf-8")).hexdigest()


__all__ = ["CODECS", "TABLES", "RawResult", "chain_head", "erased_allowed", "iter_records", "iter_rows",
           "merged_records", "merged_rows", "modules_digest", "stored_policy_digests", "verify_engine", "verify_raw",
           "verify_windows"]

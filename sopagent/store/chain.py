"""The audit chain: commitments over personal content, row hashes, and verification.

hash(row) = sha256(prev_hash + canonical JSON of {kind, seq, public fields, commitment})
commitment = sha256(salt + canonical JSON of the personal fields)

An edited public field or personal field, a deleted, inserted or reordered row, or a changed
policy snapshot breaks the chain at that row. Erasure clears personal fields and the salt but
keeps the commitment; an erased row is accepted only when a chained erase/purge action lists it.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from sopagent.store.tables import GENESIS_HASH, Decision, OperatorAction

DECISION_PUBLIC = (
    "conversation_id", "turn", "created_at", "policy_version_id", "policy_sha256", "model_name", "step",
    "chosen_index", "response_id", "chosen_by", "confidence", "status", "next_step", "error", "latency_json",
)
DECISION_PERSONAL = ("customer_text", "facts_json", "options_json", "reply_text", "sent_text")
ACTION_PUBLIC = (
    "created_at", "operator", "action", "conversation_id", "decision_id", "reason", "response_id", "next_step",
    "detail_json",
)
ACTION_PERSONAL = ("slots_json", "sent_text")

ChainRow = Decision | OperatorAction


def canonical(content: dict[str, Any]) -> str:
    """The canonical JSON text that is hashed (sorted keys, no spaces, UTF-8)."""
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def policy_digest(source_sha256: str, catalog_sha256: str) -> str:
    """What a decision stores to tie itself to a policy snapshot."""
    return hashlib.sha256(f"{source_sha256}:{catalog_sha256}".encode()).hexdigest()


def _fields(row: ChainRow) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    if isinstance(row, Decision):
        return "decision", DECISION_PUBLIC, DECISION_PERSONAL
    return "action", ACTION_PUBLIC, ACTION_PERSONAL


def commitment_of(row: ChainRow) -> str:
    """sha256 over the row's salt and personal fields (needs the salt: not erased)."""
    _, _, personal = _fields(row)
    content = {name: getattr(row, name) for name in personal}
    return hashlib.sha256(((row.salt or "") + canonical(content)).encode("utf-8")).hexdigest()


def row_hash(prev_hash: str, row: ChainRow) -> str:
    """The chain hash of a row given the previous row's hash."""
    kind, public, _ = _fields(row)
    content = {name: getattr(row, name) for name in public}
    content.update(kind=kind, seq=row.seq, commitment=row.commitment)
    return hashlib.sha256((prev_hash + canonical(content)).encode("utf-8")).hexdigest()


def seal(row: ChainRow, prev_hash: str, seq: int) -> None:
    """Give a new row its place in the chain: seq, salt, commitment, prev_hash and hash."""
    row.seq = seq
    row.salt = secrets.token_hex(16)
    row.commitment = commitment_of(row)
    row.prev_hash = prev_hash
    row.hash = row_hash(prev_hash, row)


@dataclass(frozen=True)
class ChainReport:
    """The result of verifying the audit chain."""

    intact: bool
    checked: int
    """How many chained rows were checked (up to and including the first broken one)."""
    broken_kind: str | None = None
    """decision, action, policy_version or chain_head."""
    broken_id: int | None = None
    broken_seq: int | None = None
    reason: str | None = None

    def describe(self) -> str:
        """One line for people: verified, or where and why the chain breaks."""
        if self.intact:
            return f"chain verified: {self.checked} records intact"
        where = f"{self.broken_kind} {self.broken_id}" if self.broken_id is not None else str(self.broken_kind)
        at = f" (chain position {self.broken_seq})" if self.broken_seq is not None else ""
        return f"chain BROKEN at {where}{at}: {self.reason}"


def verify_rows(rows: Iterable[ChainRow], policy_digests: dict[int, str], erased_allowed: set[tuple[str, int]],
                head: tuple[str, int] | None) -> ChainReport:
    """Check rows given in seq order; see :meth:`sopagent.store.Store.verify_chain`.

    Args:
        rows: every decision and operator action, merged in seq order.
        policy_digests: policy_version id -> digest recomputed from its stored source and catalog.
        erased_allowed: (kind, id) pairs listed by chained erase/purge actions.
        head: (last_hash, length) from the chain head row.
    """
    prev = GENESIS_HASH
    checked = 0
    for row in rows:
        checked += 1
        kind, _, _ = _fields(row)

        def broken(reason: str) -> ChainReport:
            return ChainReport(False, checked, kind, row.id, row.seq, reason)

        if row.seq != checked:
            missing = "a record was deleted or inserted before it" if row.seq > checked else "duplicate position"
            return broken(f"expected chain position {checked}, found {row.seq}: {missing}")
        if row.prev_hash != prev:
            return broken("its prev_hash does not match the record before it (deleted, inserted or reordered)")
        if row.erased_at is None:
            if row.salt is None or commitment_of(row) != row.commitment:
                return broken("its personal content (text, facts, slots or reply) was altered")
        elif (kind, row.id or 0) not in erased_allowed:
            return broken("its content was cleared without a recorded erase or purge action")
        if row_hash(prev, row) != row.hash:
            return broken("its recorded fields were altered")
        if isinstance(row, Decision):
            digest = policy_digests.get(row.policy_version_id)
            if digest is None:
                return broken(f"its policy version {row.policy_version_id} is missing")
            if digest != row.policy_sha256:
                return ChainReport(False, checked, "policy_version", row.policy_version_id, row.seq,
                                   "the stored policy source or catalog was altered after decisions used it")
        prev = row.hash
    if head is not None and (head[0] != prev or head[1] != checked):
        return ChainReport(False, checked, "chain_head", None, None,
                           f"the chain head says {head[1]} records ending {head[0][:12]}, found {checked} "
                           f"ending {prev[:12]}: records were removed from the end")
    return ChainReport(True, checked)


def merge_by_seq(decisions: Iterator[Decision], actions: Iterator[OperatorAction]) -> Iterator[ChainRow]:
    """Merge two seq-ordered streams into one."""
    d = next(decisions, None)
    a = next(actions, None)
    while d is not None or a is not None:
        if a is None or (d is not None and d.seq <= a.seq):
            assert d is not None
            yield d
            d = next(decisions, None)
        else:
            yield a
            a = next(actions, None)

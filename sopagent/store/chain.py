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
from itertools import chain as _concat
from operator import itemgetter
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

KIND_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "decision": (DECISION_PUBLIC, DECISION_PERSONAL),
    "action": (ACTION_PUBLIC, ACTION_PERSONAL),
}
"""The one definition of what is hashed: per kind, (public fields, personal fields)."""

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_C_ENCODE = None
if getattr(json.encoder, "c_make_encoder", None) is not None:
    # The C encoder that JSONEncoder.encode itself uses, called without the Python wrappers: the
    # same text as json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).
    _C_ENCODE = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _ENCODER.default, json.encoder.encode_basestring, None, ":", ",", True, False, True)


def canonical(content: dict[str, Any]) -> str:
    """The canonical JSON text that is hashed (sorted keys, no spaces, UTF-8)."""
    if _C_ENCODE is not None:
        return "".join(_C_ENCODE(content, 0))
    return _ENCODER.encode(content)


def policy_digest(source_sha256: str, catalog_sha256: str, modules_sha256: str = "") -> str:
    """What a decision stores to tie itself to a policy snapshot (helper modules included when stored)."""
    text = f"{source_sha256}:{catalog_sha256}" + (f":{modules_sha256}" if modules_sha256 else "")
    return hashlib.sha256(text.encode()).hexdigest()


def kind_of(row: ChainRow) -> str:
    """``decision`` or ``action``."""
    return "decision" if isinstance(row, Decision) else "action"


def _fields(row: ChainRow) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    kind = kind_of(row)
    public, personal = KIND_FIELDS[kind]
    return kind, public, personal


def commitment_from(salt: str | None, personal: dict[str, Any]) -> str:
    """sha256 over a salt and the personal fields given by name."""
    return hashlib.sha256(((salt or "") + canonical(personal)).encode("utf-8")).hexdigest()


def hash_from(prev_hash: str, kind: str, seq: int, commitment: str, public: dict[str, Any]) -> str:
    """The chain hash over the previous hash and a row's kind, seq, public fields and commitment.

    ``public`` is consumed (the kind, seq and commitment are added to it).
    """
    public.update(kind=kind, seq=seq, commitment=commitment)
    return hashlib.sha256((prev_hash + canonical(public)).encode("utf-8")).hexdigest()


def commitment_of(row: ChainRow) -> str:
    """sha256 over the row's salt and personal fields (needs the salt: not erased)."""
    _, _, personal = _fields(row)
    return commitment_from(row.salt, {name: getattr(row, name) for name in personal})


def row_hash(prev_hash: str, row: ChainRow) -> str:
    """The chain hash of a row given the previous row's hash."""
    kind, public, _ = _fields(row)
    return hash_from(prev_hash, kind, row.seq, row.commitment, {name: getattr(row, name) for name in public})


def seal(row: ChainRow, prev_hash: str, seq: int) -> None:
    """Give a new row its place in the chain: seq, salt, commitment, prev_hash and hash."""
    row.seq = seq
    row.salt = secrets.token_hex(16)
    row.commitment = commitment_of(row)
    row.prev_hash = prev_hash
    row.hash = row_hash(prev_hash, row)


@dataclass(slots=True)
class ChainRecord:
    """A chained row as plain values: what verification reads (from ORM objects or raw SELECT tuples)."""

    kind: str
    id: int | None
    seq: int
    prev_hash: str
    hash: str
    salt: str | None
    commitment: str
    erased_at: str | None
    public: dict[str, Any]
    personal: dict[str, Any]

    @classmethod
    def of(cls, row: ChainRow) -> "ChainRecord":
        """The record of an ORM row."""
        kind, public, personal = _fields(row)
        return cls(kind, row.id, row.seq, row.prev_hash, row.hash, row.salt, row.commitment, row.erased_at,
                   {n: getattr(row, n) for n in public}, {n: getattr(row, n) for n in personal})


def record_columns(kind: str) -> tuple[str, ...]:
    """Column names, in the order :func:`record_from_tuple` expects them, for a raw SELECT."""
    public, personal = KIND_FIELDS[kind]
    return ("id", "seq", "prev_hash", "hash", "salt", "commitment", "erased_at") + public + personal


def record_from_tuple(kind: str, values: tuple[Any, ...]) -> ChainRecord:
    """Build a record from a tuple selected with :func:`record_columns`."""
    public, personal = KIND_FIELDS[kind]
    split = 7 + len(public)
    return ChainRecord(kind, values[0], values[1], values[2], values[3], values[4], values[5], values[6],
                       dict(zip(public, values[7:split])), dict(zip(personal, values[split:])))


_SPLIT = "\x00"
"""Item separator for encoding a whole row at once: never present in JSON text (escaped as \\u0000)."""
_ROW_ENCODER = json.JSONEncoder(separators=(_SPLIT, ":"), ensure_ascii=False)
_C_ROW_ENCODE = None
if getattr(json.encoder, "c_make_encoder", None) is not None:
    _C_ROW_ENCODE = json.encoder.c_make_encoder(  # type: ignore[attr-defined]
        None, _ROW_ENCODER.default, json.encoder.encode_basestring, None, ":", _SPLIT, False, False, True)


def encode_values(values: tuple[Any, ...]) -> list[str]:
    """The JSON text of each value, as :func:`canonical` writes it inside an object, in one encoder call."""
    if _C_ROW_ENCODE is not None:
        text = "".join(_C_ROW_ENCODE(values, 0))
    else:
        text = _ROW_ENCODER.encode(values)
    return text[1:-1].split(_SPLIT)


@dataclass(frozen=True)
class RowCodec:
    """The canonical texts of raw rows of one kind (columns in :func:`record_columns` order), in bulk.

    Derived from :data:`KIND_FIELDS` only: the keys are sorted once and written into a ``%s``
    template, and all values of a batch of rows are JSON-encoded in one call of json's C encoder
    with the settings of :func:`canonical` (same string escaping, same number and null text), so
    each text equals ``canonical(personal)`` or ``canonical(public + kind, seq, commitment)``
    character for character (tests/test_audit_verify_bulk.py checks this on generated values).
    :meth:`texts` answers None for rows it cannot encode that way (a value that is not text, a
    number or NULL); callers then use the reference :func:`verify_rows`.
    """

    kind: str
    width: int
    """Number of columns in a row."""
    template: str
    """One row: personal object, separator, public object, separator; a ``%s`` per value."""
    values: Any
    """itemgetter: a row's values in the order of the template's slots."""
    slots: int

    @classmethod
    def of(cls, kind: str) -> "RowCodec":
        """The codec of ``decision`` or ``action`` rows."""
        columns = record_columns(kind)
        public, personal = KIND_FIELDS[kind]
        position = {name: i for i, name in enumerate(columns)}
        fixed = {"kind": json.dumps(kind, ensure_ascii=False)}
        slots: list[int] = []

        def template(names: list[str]) -> str:
            pieces: list[str] = []
            for name in sorted(names):  # the order sort_keys gives
                key = json.encoder.encode_basestring(name) + ":"
                if name in fixed:
                    pieces.append((key + fixed[name]).replace("%", "%%"))
                else:
                    pieces.append(key.replace("%", "%%") + "%s")
                    slots.append(position[name])
            return "{" + ",".join(pieces) + "}" + _SPLIT

        row_template = template(list(personal)) + template(list(public) + ["kind", "seq", "commitment"])
        return cls(kind, len(columns), row_template, itemgetter(*slots), len(slots))

    def texts(self, rows: list[tuple[Any, ...]]) -> list[str] | None:
        """[personal text, public text] of each row, flat (2 per row), or None (see the class)."""
        if not rows:
            return []
        flat = tuple(_concat.from_iterable(map(self.values, rows)))
        try:
            parts = encode_values(flat)
        except (TypeError, ValueError):
            return None
        if len(parts) != self.slots * len(rows):
            return None
        texts = (self.template * len(rows) % tuple(parts)).split(_SPLIT)
        texts.pop()  # the empty string after the last separator
        return texts


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


def verify_rows(rows: Iterable[ChainRow | ChainRecord], policy_digests: dict[int, str],
                erased_allowed: set[tuple[str, int]], head: tuple[str, int] | None, *, start: int = 1,
                prev_hash: str | None = GENESIS_HASH) -> ChainReport:
    """Check rows given in seq order; see :meth:`sopagent.store.Store.verify_chain`.

    Args:
        rows: every decision and operator action (ORM rows or :class:`ChainRecord`), merged in seq order.
        policy_digests: policy_version id -> digest recomputed from its stored source and catalog.
        erased_allowed: (kind, id) pairs listed by chained erase/purge actions.
        head: (last_hash, length) from the chain head row.
        start: chain position of the first row (a later one when checking a range of the chain).
        prev_hash: the hash the first row must link to; None trusts the first row's own prev_hash
            (the caller then checks that link itself).
    """
    prev = prev_hash
    checked = start - 1
    for row in rows:
        record = row if isinstance(row, ChainRecord) else ChainRecord.of(row)
        checked += 1
        kind = record.kind

        def broken(reason: str) -> ChainReport:
            return ChainReport(False, checked, kind, record.id, record.seq, reason)

        if record.seq != checked:
            missing = "a record was deleted or inserted before it" if record.seq > checked else "duplicate position"
            return broken(f"expected chain position {checked}, found {record.seq}: {missing}")
        if prev is None:
            prev = record.prev_hash
        if record.prev_hash != prev:
            return broken("its prev_hash does not match the record before it (deleted, inserted or reordered)")
        if record.erased_at is None:
            if record.salt is None or commitment_from(record.salt, record.personal) != record.commitment:
                return broken("its personal content (text, facts, slots or reply) was altered")
        elif (kind, record.id or 0) not in erased_allowed:
            return broken("its content was cleared without a recorded erase or purge action")
        public = record.public
        if kind == "decision":
            version_id, recorded_digest = public["policy_version_id"], public["policy_sha256"]
        if hash_from(prev, kind, record.seq, record.commitment, public) != record.hash:
            return broken("its recorded fields were altered")
        if kind == "decision":
            digest = policy_digests.get(version_id)
            if digest is None:
                return broken(f"its policy version {version_id} is missing")
            if digest != recorded_digest:
                return ChainReport(False, checked, "policy_version", version_id, record.seq,
                                   "the stored policy source or catalog was altered after decisions used it")
        prev = record.hash
    return head_report(head, prev, checked)


def head_report(head: tuple[str, int] | None, last_hash: str | None, checked: int) -> ChainReport:
    """The report once every row checked out: intact, unless the chain head disagrees with the last row."""
    last = last_hash or GENESIS_HASH
    if head is not None and (head[0] != last or head[1] != checked):
        return ChainReport(False, checked, "chain_head", None, None,
                           f"the chain head says {head[1]} records ending {head[0][:12]}, found {checked} "
                           f"ending {last[:12]}: records were removed from the end")
    return ChainReport(True, checked)


def merge_by_seq(decisions: Iterator[Any], actions: Iterator[Any]) -> Iterator[Any]:
    """Merge two seq-ordered streams (anything with a ``seq``) into one."""
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

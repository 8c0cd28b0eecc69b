"""Bulk checks of raw chain rows: a whole window of the chain at once, in C-level maps.

A window is every decision and operator action whose chain position lies in one range. The checks
here only decide "every row of the window checks out" (and then say how many rows and the last
hash); anything else, including a value they cannot encode, answers None and the caller re-checks
the window row by row with the reference :func:`sopagent.store.chain.verify_rows`, which names the
first broken row. So these checks must never accept what the reference rejects; they may reject
what it accepts (that only costs time).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import chain, compress
from operator import add, itemgetter
from typing import Any

from sopagent.store.chain import RowCodec, record_columns

Row = tuple[Any, ...]
"""A raw row, columns in :func:`sopagent.store.chain.record_columns` order."""

_COLUMNS = record_columns("decision")
assert _COLUMNS[:7] == ("id", "seq", "prev_hash", "hash", "salt", "commitment", "erased_at")
_ID, _SEQ, _PREV, _HASH, _SALT, _COMMITMENT, _ERASED = (itemgetter(i) for i in range(7))
_LINK = itemgetter(1, 2, 3)
"""seq, prev_hash, hash."""
_VERSION = itemgetter(_COLUMNS.index("policy_version_id"))
_DIGEST = itemgetter(_COLUMNS.index("policy_sha256"))
_HEX = type(hashlib.sha256()).hexdigest
_SHA256 = hashlib.sha256
_ENCODE = str.encode


def _sha256_hex(prefixes: Any, texts: Any) -> list[str]:
    """sha256(prefix + text) as hex, pairwise: the hashes of chain.commitment_from / chain.hash_from."""
    return list(map(_HEX, map(_SHA256, map(_ENCODE, map(add, prefixes, texts)))))


@dataclass(frozen=True)
class WindowOk:
    """A window whose rows all check out."""

    count: int
    last_hash: str | None
    first: tuple[str, int | None, int, str] | None
    """kind, id, seq and prev_hash of the window's first row (None for an empty window)."""


def rows_ok(codec: RowCodec, rows: list[Row], policy_digests: dict[int, str],
            erased_allowed: set[tuple[str, int]]) -> bool:
    """Each row's own checks (links aside): commitment or a recorded erasure, hash over its prev_hash, policy."""
    texts = codec.texts(rows)
    if texts is None:
        return False
    personal, public = texts[0::2], texts[1::2]
    if _sha256_hex(map(_PREV, rows), public) != list(map(_HASH, rows)):
        return False
    erased = list(map(_ERASED, rows))
    live = rows
    if erased.count(None) != len(rows):
        kept = [value is None for value in erased]
        cleared = compress(rows, [not k for k in kept])
        if any((codec.kind, row[0] or 0) not in erased_allowed for row in cleared):
            return False
        live, personal = list(compress(rows, kept)), list(compress(personal, kept))
    salts = list(map(_SALT, live))
    if None in salts or _sha256_hex(salts, personal) != list(map(_COMMITMENT, live)):
        return False
    if codec.kind == "decision":
        expected = list(map(policy_digests.get, map(_VERSION, rows)))
        if None in expected or expected != list(map(_DIGEST, rows)):
            return False
    return True


def window_ok(decisions: list[Row], actions: list[Row], start: int, prev_hash: str | None,
              policy_digests: dict[int, str], erased_allowed: set[tuple[str, int]],
              codecs: dict[str, RowCodec]) -> WindowOk | None:
    """Check one window: positions from ``start`` on, linked to ``prev_hash`` (None: trust the first row).

    Answers None when any row, position or link does not check out (or cannot be checked here).
    """
    try:
        if not (rows_ok(codecs["decision"], decisions, policy_digests, erased_allowed)
                and rows_ok(codecs["action"], actions, policy_digests, erased_allowed)):
            return None
        if decisions and actions:
            links = sorted(chain(map(_LINK, decisions), map(_LINK, actions)))
            seqs, prevs, hashes = (list(column) for column in zip(*links))
        else:
            rows = decisions or actions
            seqs, prevs, hashes = list(map(_SEQ, rows)), list(map(_PREV, rows)), list(map(_HASH, rows))
        if not seqs:
            return WindowOk(0, prev_hash, None)
        if seqs != list(range(start, start + len(seqs))):
            return None
        if (prev_hash is not None and prevs[0] != prev_hash) or prevs[1:] != hashes[:-1]:
            return None
    except (TypeError, ValueError, UnicodeError):
        return None
    if decisions and (not actions or decisions[0][1] <= actions[0][1]):
        kind, row = "decision", decisions[0]
    else:
        kind, row = "action", actions[0]
    return WindowOk(len(seqs), hashes[-1], (kind, row[0], row[1], row[2]))


__all__ = ["Row", "WindowOk", "rows_ok", "window_ok"]

"""Export audit rows as JSON Lines or CSV (the csv module; opens in a spreadsheet), and read them back."""

from __future__ import annotations

import csv
import json
from typing import Any, Iterable, TextIO

from sopagent.store import Decision
from sopagent.store.chain import ChainRow

COLUMNS = (
    "kind", "seq", "id", "created_at", "conversation_id", "turn", "policy_version_id", "policy_sha256", "model_name",
    "step", "customer_text", "facts_json", "options_json", "chosen_index", "response_id", "chosen_by", "confidence",
    "status", "reply_text", "sent_text", "next_step", "error", "latency_json", "operator", "action", "decision_id",
    "reason", "detail_json", "slots_json", "erased_at", "commitment", "prev_hash", "hash",
)
"""Export columns: decisions and operator actions share one table shape (unused cells are empty)."""
INT_COLUMNS = {"seq", "id", "turn", "policy_version_id", "chosen_index", "decision_id"}
FLOAT_COLUMNS = {"confidence"}


def record(row: ChainRow) -> dict[str, Any]:
    """A row as a flat dict over :data:`COLUMNS` (None where the kind has no such field)."""
    kind = "decision" if isinstance(row, Decision) else "action"
    out: dict[str, Any] = {"kind": kind}
    for name in COLUMNS[1:]:
        value = getattr(row, name, None)
        out[name] = None if value == "" else value  # one "no value": null in JSON, an empty cell in CSV
    return out


def write_jsonl(rows: Iterable[ChainRow], stream: TextIO) -> int:
    """One JSON object per line; returns the number of rows."""
    count = 0
    for row in rows:
        stream.write(json.dumps(record(row), ensure_ascii=False) + "\n")
        count += 1
    return count


def write_csv(rows: Iterable[ChainRow], stream: TextIO) -> int:
    """A header row and one row per record (empty cell = no value); open the file with newline=''."""
    writer = csv.DictWriter(stream, fieldnames=COLUMNS)
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in record(row).items()})
        count += 1
    return count


def read_csv(stream: TextIO) -> list[dict[str, Any]]:
    """Read an exported CSV back into typed records (the inverse of :func:`write_csv`)."""
    out = []
    for raw in csv.DictReader(stream):
        item: dict[str, Any] = {}
        for name in COLUMNS:
            value = raw.get(name, "")
            if value == "":
                item[name] = None
            elif name in INT_COLUMNS:
                item[name] = int(value)
            elif name in FLOAT_COLUMNS:
                item[name] = float(value)
            else:
                item[name] = value
        out.append(item)
    return out


def read_jsonl(stream: TextIO) -> list[dict[str, Any]]:
    """Read an exported JSON Lines file back."""
    return [json.loads(line) for line in stream if line.strip()]

"""Export audit rows as JSON Lines or CSV (the csv module; opens in a spreadsheet), and read them back."""

from __future__ import annotations

import csv
import json
from typing import Any, Iterable, Mapping, TextIO

from sopagent.store import Decision, OutboxEffect, Store
from sopagent.store.chain import ChainRow

COLUMNS = (
    "kind", "seq", "id", "created_at", "conversation_id", "turn", "policy_version_id", "policy_sha256", "model_name",
    "step", "customer_text", "facts_json", "options_json", "chosen_index", "response_id", "chosen_by", "confidence",
    "status", "reply_text", "sent_text", "next_step", "error", "latency_json", "operator", "action", "decision_id",
    "reason", "detail_json", "slots_json", "effects", "erased_at", "commitment", "prev_hash", "hash",
)
"""Export columns: decisions and operator actions share one table shape (unused cells are empty).
``effects`` (decisions only) lists the decision's actions: name, arguments, status, result, error,
idempotency key and when it last changed."""

EffectsByDecision = Mapping[int, list[dict[str, Any]]]


def effects_by_decision(store: Store) -> dict[int, list[dict[str, Any]]]:
    """Every decision's outbox rows as exported (see :data:`COLUMNS`)."""
    return {decision_id: [effect_record(e) for e in effects]
            for decision_id, effects in store.effects_by_decision().items()}


def effect_record(effect: OutboxEffect) -> dict[str, Any]:
    """One action of a decision as exported and shown."""
    return {"name": effect.name, "arguments": json.loads(effect.arguments_json) if effect.arguments_json else None,
            "status": effect.status, "result": json.loads(effect.result_json) if effect.result_json else None,
            "error": effect.error, "idempotency_key": effect.idempotency_key, "updated_at": effect.updated_at,
            "option_index": effect.option_index, "irreversible": effect.irreversible}
INT_COLUMNS = {"seq", "id", "turn", "policy_version_id", "chosen_index", "decision_id"}
FLOAT_COLUMNS = {"confidence"}


def record(row: ChainRow, effects: EffectsByDecision | None = None) -> dict[str, Any]:
    """A row as a flat dict over :data:`COLUMNS` (None where the kind has no such field)."""
    kind = "decision" if isinstance(row, Decision) else "action"
    out: dict[str, Any] = {"kind": kind}
    for name in COLUMNS[1:]:
        value = getattr(row, name, None)
        out[name] = None if value == "" else value  # one "no value": null in JSON, an empty cell in CSV
    if kind == "decision" and effects is not None:
        out["effects"] = effects.get(row.id or 0, [])
    return out


def write_jsonl(rows: Iterable[ChainRow], stream: TextIO, effects: EffectsByDecision | None = None) -> int:
    """One JSON object per line; returns the number of rows."""
    count = 0
    for row in rows:
        stream.write(json.dumps(record(row, effects), ensure_ascii=False) + "\n")
        count += 1
    return count


def write_csv(rows: Iterable[ChainRow], stream: TextIO, effects: EffectsByDecision | None = None) -> int:
    """A header row and one row per record (empty cell = no value; effects as JSON); open the file
    with newline=''."""
    writer = csv.DictWriter(stream, fieldnames=COLUMNS)
    writer.writeheader()
    count = 0
    for row in rows:
        flat = record(row, effects)
        if flat["effects"] is not None:
            flat["effects"] = json.dumps(flat["effects"], ensure_ascii=False)
        writer.writerow({k: "" if v is None else v for k, v in flat.items()})
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
            elif name == "effects":
                item[name] = json.loads(value)
            else:
                item[name] = value
        out.append(item)
    return out


def read_jsonl(stream: TextIO) -> list[dict[str, Any]]:
    """Read an exported JSON Lines file back."""
    return [json.loads(line) for line in stream if line.strip()]

"""Catalog loading, validation errors with file and line, and typed rendering."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest

from sopagent import CatalogError, load_catalog
from sopagent.catalog import parse_catalog

ROOT = Path(__file__).resolve().parent.parent

GOOD = """\
catalog: demo
version: "1"
responses:
  - id: refunded
    text: "Refunded {amount} on {when} for {kind} order {order}. {{not a slot}}"
    description: Confirm a refund.
    slots:
      amount: {type: money, currency: EUR}
      when: {type: date, format: "%Y-%m-%d"}
      kind: {type: enum, values: [late, overlimit]}
      order: {type: pattern, pattern: "#W[0-9]{3}"}
  - id: bye
    text: Goodbye.
    description: End.
    ends_conversation: true
"""


def test_example_catalogs_load() -> None:
    for path in (ROOT / "catalogs").glob("*.yaml"):
        catalog = load_catalog(path)
        assert catalog.responses and len(catalog.sha256) == 64


def test_render_formats_only_typed_values() -> None:
    catalog = parse_catalog(GOOD, "demo.yaml")
    text = catalog["refunded"].render({"amount": Decimal("25"), "when": dt.date(2026, 11, 3), "kind": "late",
                                       "order": "#W123"})
    assert text == "Refunded €25.00 on 2026-11-03 for late order #W123. {not a slot}"


@pytest.mark.parametrize("values, message", [
    ({"amount": "lots", "when": "2026-01-01", "kind": "late", "order": "#W123"}, "amount"),
    ({"amount": 5, "when": "yesterday", "kind": "late", "order": "#W123"}, "when"),
    ({"amount": 5, "when": "2026-01-01", "kind": "anything", "order": "#W123"}, "kind"),
    ({"amount": 5, "when": "2026-01-01", "kind": "late", "order": "#W123; DROP"}, "order"),
    ({"amount": 5, "when": "2026-01-01", "kind": "late"}, "missing"),
])
def test_render_rejects_mistyped_or_missing_values(values: dict, message: str) -> None:
    catalog = parse_catalog(GOOD, "demo.yaml")
    with pytest.raises(ValueError, match=message):
        catalog["refunded"].render(values)


@pytest.mark.parametrize("mutate, line, words", [
    (lambda s: s.replace("    ends_conversation: true", "    ends_conversaton: true"), 15, "unknown key `ends_conversaton`"),
    (lambda s: s.replace("Goodbye.", "Goodbye {name}."), 13, "does not declare"),
    (lambda s: s.replace("      order: {type: pattern", "      extra: {type: integer}\n      order: {type: pattern"), 7,
     "never uses"),
    (lambda s: s.replace("type: money", "type: cash"), 8, "unknown slot type"),
    (lambda s: s.replace("id: bye", "id: refunded"), 12, "duplicate response id"),
    (lambda s: s.replace('version: "1"', 'version: "1"\nversion: "2"'), 3, "duplicate key"),
])
def test_errors_name_file_line_and_fix(mutate, line: int, words: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(mutate(GOOD), "demo.yaml")
    assert info.value.path == "demo.yaml"
    assert info.value.line == line, str(info.value)
    assert words in str(info.value)
    assert "fix:" in str(info.value)


def test_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read catalog"):
        load_catalog(tmp_path / "nope.yaml")

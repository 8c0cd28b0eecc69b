"""Card numbers and IBANs are masked before a message is stored, shown, exported or read by a model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from sopagent import Agent, Policy, PolicyError, ScriptedModel, Store
from sopagent.audit.export import write_jsonl
from sopagent.audit.query import AuditFilter, select_rows
from sopagent.policy import load_policy
from sopagent.redact import mask_sensitive

ROOT = Path(__file__).resolve().parent.parent
CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"


@pytest.mark.parametrize("text, masked", [
    (f"my card is {CARD}, thanks", "my card is •••• •••• •••• 1111, thanks"),
    ("card 4111-1111-1111-1111", "card •••• •••• •••• 1111"),
    (f"IBAN {IBAN} please", "IBAN DE•• •••• •••• •••• •••• 3000 please"),
    ("gb82west12345698765432", "GB•• •••• •••• •••• •••• 5432"),
    ("order 1234567890123 is not a card", "order 1234567890123 is not a card"),  # fails the Luhn check
    ("DE89 3704 0044 0532 0130 01", "DE89 3704 0044 0532 0130 01"),  # fails the IBAN checksum
    ("card ending 4821, born 14/03/1985", "card ending 4821, born 14/03/1985"),
])
def test_valid_card_numbers_and_ibans_are_masked_keeping_the_last_four(text: str, masked: str) -> None:
    assert mask_sensitive(text) == masked


def test_a_full_card_number_and_an_iban_go_no_further_than_the_edge(card_policy, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'audit.db'}")
    model = ScriptedModel(facts=[{"intent": "lost_or_stolen_card", "handoff": "not_requested"},
                                 {"card_last4": "1111", "date_of_birth": None, "handoff": "not_requested"}])
    agent = Agent(card_policy, model, store)
    cid = agent.start(customer_ref="cust-card")
    agent.respond(cid, f"I lost my card {CARD}, my IBAN is {IBAN}")
    second = agent.respond(cid, f"the number is {CARD.replace(' ', '')}", request_key="k1")
    assert agent.respond(cid, f"the number is {CARD.replace(' ', '')}", request_key="k1").decision_id == \
        second.decision_id  # a retry of the same raw message is still the same message
    assert second.facts["card_last4"] == "1111"  # the last four digits still reach the procedure
    exported = io.StringIO()
    write_jsonl(select_rows(store, AuditFilter()), exported)
    prompts = json.dumps([p.messages() for p in model.prompts])
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("audit.db*"))
    for full in (CARD, CARD.replace(" ", ""), IBAN, IBAN.replace(" ", "")):
        assert full.encode() not in raw and full not in exported.getvalue() and full not in prompts, full
    assert "•••• •••• •••• 1111" in exported.getvalue()


def test_a_policy_declares_its_own_sensitive_patterns(tmp_path: Path) -> None:
    policy = load_policy(ROOT / "policies" / "card_services.py")
    policy.sensitive = (r"\bNB-\d{6}\b",)
    agent = Agent(policy, ScriptedModel(facts=[{"intent": "complaint", "handoff": "not_requested"}], choices=[0]),
                  Store(f"sqlite:///{tmp_path / 'a.db'}"))
    cid = agent.start()
    agent.respond(cid, "my customer number is NB-123456")
    assert agent.store.decisions(cid)[-1].customer_text == "my customer number is •••"
    with pytest.raises(PolicyError, match="not a regular expression"):
        Policy(name="x", version="1", catalog="c.yaml", start="a", fallback="b", sensitive=["(unclosed"])

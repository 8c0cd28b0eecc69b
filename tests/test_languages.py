"""Catalogs in several languages: validation with file and line, replies in the conversation's language,
formats by Babel, the language set by a channel or read from the first message, and the audit record."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from conftest import POLICIES

from sopagent import CatalogError, Store, load_policy
from sopagent.catalog import load_catalog, parse_catalog
from sopagent.convtest import run_test_files
from sopagent.engine import Agent
from sopagent.errors import ConversationError
from sopagent.languages import LANGUAGE_PROBABILITIES
from sopagent.models.echo import EchoModel
from sopagent.operations import Operations
from sopagent.policy import Policy

ROOT = Path(__file__).resolve().parent.parent
TWO = """\
catalog: demo
version: "1"
languages: [en, de]
responses:
  - id: refunded
    text: "I refunded the {kind} fee of {amount} on {when}."
    translations:
      de: "Ich habe die {kind} von {amount} am {when} erstattet."
    description: Confirm a refund.
    slots:
      amount: {type: money, currency: EUR}
      when: {type: date}
      kind: {type: enum, values: [late, annual], labels: {de: {late: Mahngebühr, annual: Jahresgebühr}}}
  - id: bye
    text: Goodbye.
    translations: {de: Auf Wiedersehen.}
    description: End.
"""


def test_a_reply_is_written_as_its_language_writes_it() -> None:
    catalog = parse_catalog(TWO)
    values = {"kind": "late", "amount": "1234.5", "when": "2026-03-01"}
    assert catalog["refunded"].render(values) == "I refunded the late fee of €1,234.50 on 01 March 2026."
    german = catalog.in_language("de")
    assert german["refunded"].render(values) == "Ich habe die Mahngebühr von 1.234,50\xa0€ am 1. März 2026 erstattet."
    assert german["bye"].render({}) == "Auf Wiedersehen."
    assert catalog.in_language("en") is catalog and catalog.in_language(None) is catalog
    with pytest.raises(CatalogError, match="no replies in 'fr'.*speaks en, de"):
        catalog.in_language("fr")


@pytest.mark.parametrize("change, line, words", [
    (lambda s: s.replace('    translations: {de: Auf Wiedersehen.}\n', ''), 14, "has no 'de' text"),
    (lambda s: s.replace("erstattet.", "{amount} erstattet, {extra}."), 8, "uses the slots"),
    (lambda s: s.replace("am {when} ", ""), 8, "its 'en' text ['amount', 'kind', 'when']"),
    (lambda s: s.replace(", annual: Jahresgebühr", ""), 13, "no 'de' word for ['annual']"),
    (lambda s: s.replace("translations: {de: Auf", "translations: {fr: Auf"), 16, "other languages are ['de']"),
    (lambda s: s.replace("[en, de]", "[en, german]"), 3, "'german' is not a language code"),
    (lambda s: s.replace("[en, de]", "[en, de, de]"), 3, "listed twice"),
])
def test_a_catalog_refuses_a_missing_or_mismatched_translation_at_its_line(change, line: int, words: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(change(TWO), "demo.yaml")
    error = caught.value
    assert words in str(error) and error.line == line and error.fix, (str(error), error.line)


def test_the_card_example_speaks_english_and_german() -> None:
    catalog = load_catalog(ROOT / "catalogs" / "card_services.yaml")
    assert catalog.languages == ("en", "de")
    german = catalog.in_language("de")
    assert all(german[r].text != catalog[r].text for r in catalog.responses)
    text = german["fee_refunded"].render({"fee_type": "annual", "amount": 95})
    assert "Jahresgebühr" in text and "95,00\xa0€" in text


def test_a_conversation_replies_in_the_language_its_channel_set(store: Store) -> None:
    policy = load_policy(POLICIES / "card_services.py")
    agent = Agent(policy, EchoModel(), store, tools=policy.make_tools())
    with pytest.raises(ConversationError, match="answers in en, de, not 'fr'"):
        agent.start(language="fr")
    cid = agent.start(language="de")
    first = agent.respond(cid, json.dumps({"intent": "dispute_payment", "handoff": "not_requested"}))
    assert first.reply == policy.catalog.in_language("de")["ask_identity"].text
    agent.respond(cid, json.dumps({"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": "not_requested"}))
    held = agent.respond(cid, json.dumps({"payment_date": "2026-11-15", "amount": 899.0, "merchant": "Techland Store",
                                          "handoff": "not_requested"}))
    assert held.status == "pending" and held.reply == policy.catalog.in_language("de")["holding_for_review"].text
    # the operator's approval sends the German reply, filled with the opened dispute's reference
    Operations(store, "ana").approve(held.decision_id, "checked")
    run = agent.effects.run_decision(held.decision_id)
    assert run is not None and run.reply is not None
    assert run.reply.startswith("Ich habe die Beanstandung DSP-") and "899,00\xa0€ an Techland Store" in run.reply


def test_the_language_is_read_from_the_first_message_when_the_policy_asks(store: Store) -> None:
    policy = load_policy(POLICIES / "card_services.py")
    policy.read_language = True
    agent = Agent(policy, EchoModel(), store, tools=policy.make_tools())
    cid = agent.start()
    # the echo model picks label 1 (German) for the language reading, then reads the facts
    agent.respond(cid, json.dumps({"_choose": 1, "intent": "lost_or_stolen_card", "handoff": "not_requested"}))
    conversation = store.get_conversation(cid)
    assert conversation.language() == "de"
    assert set(json.loads(conversation.metadata_json)[LANGUAGE_PROBABILITIES]) == {"en", "de"}
    later = agent.respond(cid, json.dumps({"card_last4": "4821", "date_of_birth": "1985-03-14",
                                           "handoff": "not_requested"}))
    assert later.reply and "Endung 4821" in later.reply
    # set by the channel: nothing is read
    assert Agent(policy, EchoModel(), store, tools=policy.make_tools()).start(language="en")


def test_conversation_tests_run_in_the_files_language(tmp_path: Path) -> None:
    tests = tmp_path / "de.yaml"
    tests.write_text(f"""policy: {POLICIES / 'card_services.py'}
language: de
tests:
  - name: German reply
    turns:
      - customer: "Karte verloren"
        given: {{intent: lost_or_stolen_card}}
        expect: {{response: ask_identity, says: "Identität"}}
  - name: English reply checked for German words
    language: en
    turns:
      - customer: "lost my card"
        given: {{intent: lost_or_stolen_card}}
        expect: {{response: ask_identity, says: "Identität"}}
""")
    out = io.StringIO()
    assert run_test_files([str(tests)], model=EchoModel(), out=out) == 1
    report = out.getvalue()
    assert "PASS" in report and "German reply" in report
    assert "reply: expected it to say 'Identität', got 'Before I can look" in report


@pytest.mark.model
def test_the_embedded_model_reads_the_first_messages_language(embedded_model, store: Store) -> None:
    policy = load_policy(POLICIES / "card_services.py")
    policy.read_language = True
    for text, language in (("Hallo, ich habe gestern meine Karte verloren", "de"),
                           ("Hi, I lost my card yesterday", "en")):
        agent = Agent(policy, embedded_model, store, tools=policy.make_tools())
        cid = agent.start()
        result = agent.respond(cid, text)
        assert store.get_conversation(cid).language() == language
        assert result.reply == policy.catalog.in_language(language)[result.response_id or ""].text


def test_a_policy_setting_is_documented() -> None:
    assert "read_language" in (Policy.__init__.__doc__ or "")

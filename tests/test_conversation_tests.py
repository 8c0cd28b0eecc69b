"""Conversation tests run without a language model: each turn's ``given`` reading, under ``--model echo``."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sopagent import ScriptedModel
from sopagent.convtest import run_test_files
from sopagent.errors import ConversationTestError, ModelError, ModelSpecError
from sopagent.models import load_model

ROOT = Path(__file__).resolve().parent.parent
OK = "not_requested"

LOST_CARD = {"name": "lost card blocked on a clear yes", "turns": [
    {"customer": "Hi, I lost my card", "given": {"intent": "lost_or_stolen_card", "handoff": OK},
     "expect": {"response": "ask_identity"}},
    {"customer": "4821, born 14 March 1985", "given": {"card_last4": "4821", "date_of_birth": "1985-03-14"},
     "expect": {"response": "confirm_block"}},
    {"customer": "yes, block it", "given": {"label": "yes"},
     "expect": {"response": "card_blocked", "effects": ["block_card"]}},
]}
FOUND_CARD = {"name": "a found card is not blocked", "turns": [
    {"customer": "my card was stolen", "given": {"intent": "lost_or_stolen_card"}, "expect": {"response": "ask_identity"}},
    {"customer": "4821, 14 March 1985", "given": {"card_last4": "4821", "date_of_birth": "1985-03-14"},
     "expect": {"response": "confirm_block"}},
    {"customer": "oh I found it, don't", "given": {"label": "no"}, "expect": {"response": "block_not_done"}},
]}


def _write(tmp_path: Path, tests: list[dict], name: str = "cards.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"policy": str(ROOT / "policies" / "card_services.py"), "tests": tests}))
    return path


def test_given_readings_test_a_procedure_without_a_model_in_any_order(tmp_path: Path) -> None:
    for order in ([LOST_CARD, FOUND_CARD], [FOUND_CARD, LOST_CARD]):
        out = io.StringIO()
        status = run_test_files([str(_write(tmp_path, order))], model=load_model("echo"), out=out)
        assert status == 0, out.getvalue()
        assert "2 of 2 conversation tests passed; 0 unsafe actions" in out.getvalue()


def test_a_wrong_given_reading_fails_the_test_it_belongs_to(tmp_path: Path) -> None:
    wrong = {**FOUND_CARD, "turns": [*FOUND_CARD["turns"][:2], {**FOUND_CARD["turns"][2], "given": {"label": "yes"}}]}
    out = io.StringIO()
    assert run_test_files([str(_write(tmp_path, [wrong]))], model=load_model("echo"), out=out) == 1
    assert "expected 'block_not_done', got 'card_blocked'" in out.getvalue() and "1 unsafe action" in out.getvalue()


def test_under_echo_a_turn_without_a_given_reading_says_so(tmp_path: Path) -> None:
    bare = {"name": "no reading", "turns": [{"customer": "hi", "expect": {"response": "ask_identity"}}]}
    result = subprocess.run([sys.executable, "-m", "sopagent.cli", "test", str(_write(tmp_path, [bare])),
                             "--model", "echo"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "has no `given:` reading" in result.stdout, result.stdout + result.stderr


def test_k_runs_only_the_named_tests_and_says_when_none_match(tmp_path: Path) -> None:
    path = str(_write(tmp_path, [LOST_CARD, FOUND_CARD]))
    out = io.StringIO()
    assert run_test_files([path], model=load_model("echo"), out=out, select="found card") == 0
    assert "1 of 1 conversation tests passed" in out.getvalue() and "blocked on a clear yes" not in out.getvalue()
    with pytest.raises(ConversationTestError, match="no test name contains 'nothing like this'"):
        run_test_files([path], model=load_model("echo"), out=io.StringIO(), select="nothing like this")


def test_a_scripted_model_says_what_its_script_should_hold_and_when_it_ran_out() -> None:
    with pytest.raises(ModelSpecError, match="scripted choice #2 is 'o': give an option index"):
        ScriptedModel(choices=[1, "o"])
    with pytest.raises(ModelSpecError, match="scripted facts #1 is 'intent'"):
        ScriptedModel(facts=["intent"])
    from sopagent.models.base import ChatPrompt
    from sopagent.policy import NoFacts

    model = ScriptedModel(facts=[{}])
    model.extract(ChatPrompt("s", "c", "t"), NoFacts)
    with pytest.raises(ModelError, match="facts ran out: a step asked for facts after all 1 entries were used"):
        model.extract(ChatPrompt("s", "c", "t"), NoFacts)


def test_explain_and_jsonl_show_what_each_turn_read_and_sent(tmp_path: Path) -> None:
    import json

    path = str(_write(tmp_path, [LOST_CARD]))
    explained = io.StringIO()
    run_test_files([path], model=load_model("echo"), out=explained, explain=True)
    assert "facts: card_last4='4821', date_of_birth='1985-03-14'" in explained.getvalue()
    assert "reply (card_blocked): 'Your card ending 4821 is now blocked" in explained.getvalue()
    lines = io.StringIO()
    run_test_files([path], model=load_model("echo"), out=lines, jsonl=True)
    turns = [json.loads(line) for line in lines.getvalue().splitlines() if line.startswith("{")]
    assert [t["response"] for t in turns] == ["ask_identity", "confirm_block", "card_blocked"]
    assert turns[-1]["passed"] and turns[-1]["effects"][0]["name"] == "block_card" and "total" in turns[-1]["latency_ms"]

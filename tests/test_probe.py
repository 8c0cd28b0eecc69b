"""``sopagent probe``: per-field reading accuracy from examples, weak fields flagged with a remedy."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import yaml

from sopagent import ScriptedModel
from sopagent.errors import ConversationTestError
from sopagent.policy import load_policy
from sopagent.probe import load_probe_file, probe_policy, report, run_probe
from sopagent.scaffold import create_policy

ROOT = Path(__file__).resolve().parent.parent
OK = "not_requested"


def _probe_file(tmp_path: Path, steps: dict) -> Path:
    path = tmp_path / "cards.probe.yaml"
    path.write_text(yaml.safe_dump({"policy": str(ROOT / "policies" / "card_services.py"), "steps": steps}))
    return path


def test_a_field_read_wrong_is_flagged_with_its_remedy(tmp_path: Path) -> None:
    path = _probe_file(tmp_path, {"fee_refund": [
        {"message": "the late payment one", "expect": {"fee_type": "late payment"}},
        {"message": "the yearly card fee", "expect": {"fee_type": "annual"}}]})
    model = ScriptedModel(facts=[{"fee_type": "late payment", "handoff": OK, "_probabilities": {"fee_type": 0.9}},
                                 {"fee_type": "late payment", "handoff": OK, "_probabilities": {"fee_type": 0.4}}])
    probe, policy_path = load_probe_file(path)
    scores = probe_policy(load_policy(policy_path), probe, model)
    out = io.StringIO()
    assert report(scores, out) == 1
    text = out.getvalue()
    assert "WEAK fee_refund.fee_type: 1/2 right (50%), p 0.90-0.90 when right" in text
    assert "late payment: 1/1, annual: 0/1" in text
    assert "misread 'the yearly card fee' -> 'late payment' (p 0.40), wanted 'annual'" in text
    assert "remedy: read it by itself with OneToken" in text


def test_a_probe_names_a_step_or_field_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(ConversationTestError, match="not a step of card_services"):
        run_probe(str(_probe_file(tmp_path, {"nope": [{"message": "x", "expect": {"a": 1}}]})),
                  ScriptedModel(), io.StringIO())
    with pytest.raises(ConversationTestError, match="has no field 'colour'"):
        run_probe(str(_probe_file(tmp_path, {"fee_refund": [{"message": "x", "expect": {"colour": "red"}}]})),
                  ScriptedModel(), io.StringIO())


@pytest.mark.model
def test_the_scaffolds_probe_runs_on_the_embedded_model(tmp_path: Path, embedded_model) -> None:
    create_policy("member_desk", tmp_path)
    out = io.StringIO()
    run_probe(str(tmp_path / "policies" / "member_desk.probe.yaml"), embedded_model, out)
    text = out.getvalue()
    for field in ("welcome.label", "verify_identity.member_number", "new_email.email", "confirm_change.label"):
        assert f" {field}: " in text, text
    assert "5 fields probed" in text

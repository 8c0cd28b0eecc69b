"""`sopagent check` on the examples and on broken policies."""

from __future__ import annotations

from pathlib import Path

from sopagent.check import check_policy_file
from sopagent.cli import main

ROOT = Path(__file__).resolve().parent.parent

CATALOG = """\
catalog: mini
version: "1"
responses:
  - id: hello
    text: Hello.
    description: Greet.
  - id: amount_due
    text: "You owe {amount}."
    description: Say the amount.
    slots:
      amount: {type: money, currency: EUR}
  - id: human
    text: A colleague will take over.
    description: Hand over.
    handoff: true
"""

POLICY = """\
from sopagent import END, Policy, say

policy = Policy(name="mini", version="1", catalog="mini.yaml", start="first", fallback="human")

@policy.step()
def first(turn):
    if turn.known.get("x"):
        return [say("hello", next="second")]
    return [say("amount_due", next=END, amount=12)]

@policy.step()
def second(turn):
    return [say("hello", next=END)]
"""


def write(tmp_path: Path, policy: str, catalog: str = CATALOG) -> Path:
    (tmp_path / "mini.yaml").write_text(catalog)
    path = tmp_path / "mini.py"
    path.write_text(policy)
    return path


def test_examples_pass() -> None:
    assert main(["check", str(ROOT / "policies" / "card_services.py")]) == 0
    for policy in (ROOT / "policies").glob("*.py"):
        if "backend" not in policy.name:
            assert check_policy_file(policy) == [], policy


def test_clean_minimal_policy(tmp_path: Path) -> None:
    assert check_policy_file(write(tmp_path, POLICY)) == []


def test_unknown_response_and_step_are_reported_with_line(tmp_path: Path) -> None:
    path = write(tmp_path, POLICY.replace('say("hello", next=END)', 'say("helo", next="third")'))
    problems = check_policy_file(path)
    assert any("unknown response 'helo' (did you mean 'hello'?)" in p and f"{path}:13" in p for p in problems), problems
    path = write(tmp_path, POLICY.replace('say("hello", next="second")', 'say("hello", next="secnd")'))
    assert any("unknown step 'secnd' (did you mean 'second'?)" in p for p in check_policy_file(path))


def test_slot_binding_is_checked(tmp_path: Path) -> None:
    problems = check_policy_file(write(tmp_path, POLICY.replace("amount=12", "amount='twelve'")))
    assert any("slot 'amount'" in p for p in problems), problems
    problems = check_policy_file(write(tmp_path, POLICY.replace(", amount=12", "")))
    assert any("does not bind slot(s) ['amount']" in p for p in problems), problems


def test_unreachable_and_empty_steps(tmp_path: Path) -> None:
    source = POLICY.replace('return [say("hello", next="second")]', 'return [say("hello", next=END)]')
    source += '\n@policy.step()\ndef third(turn):\n    if turn.known:\n        return []\n'
    problems = check_policy_file(write(tmp_path, source))
    assert any("'second' is unreachable" in p for p in problems), problems
    assert any("'third' never returns an option" in p for p in problems), problems
    assert any("can return no option here" in p for p in problems), problems
    assert any("reach the end of the function" in p for p in problems), problems


def test_catalog_without_handoff(tmp_path: Path) -> None:
    catalog = CATALOG.replace("    handoff: true\n", "")
    problems = check_policy_file(write(tmp_path, POLICY, catalog))
    assert any("no hand-off response" in p for p in problems), problems


def test_import_error_names_the_line(tmp_path: Path) -> None:
    problems = check_policy_file(write(tmp_path, POLICY.replace("def second(turn):", "def second(turn):\n    1/0\n") + "\nraise ValueError('boom')\n"))
    assert len(problems) == 1 and "mini.py:" in problems[0] and "boom" in problems[0]


def test_a_computed_slot_value_of_the_wrong_type_is_reported_at_its_say_line(tmp_path: Path) -> None:
    from sopagent import Agent, ScriptedModel, Store
    from sopagent.policy import load_policy

    source = POLICY.replace('return [say("amount_due", next=END, amount=12)]',
                            'owed = turn.known.get("owed", "twelve")\n    return [say("amount_due", next=END, amount=owed)]')
    path = write(tmp_path, source)
    assert check_policy_file(path) == []  # the value is computed: only the run can tell
    agent = Agent(load_policy(path), ScriptedModel(), Store(f"sqlite:///{tmp_path / 'a.db'}"))
    result = agent.respond(agent.start(), "hi")
    line = source.splitlines().index('    return [say("amount_due", next=END, amount=owed)]') + 1
    assert result.status == "escalated" and f"mini.py:{line}" in (result.error or ""), result.error

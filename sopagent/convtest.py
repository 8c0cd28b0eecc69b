"""Conversation tests: customer turns with exact expectations, no model-as-judge.

A test file (YAML)::

    policy: ../../policies/card_services.py     # relative to this file
    tests:
      - name: lost card is blocked after verification
        turns:
          - customer: "Hi, I lost my card"
            expect: {response: ask_identity, step: welcome, facts: {intent: lost_or_stolen_card}}

``expect`` may hold ``response`` (catalog id), ``step`` (the step that handled the message),
``next_step``, ``status``, ``says`` (words the reply must contain), ``facts`` (each listed fact must
equal the extracted one) and ``effects``
(the account actions the turn takes, by name and in order, e.g. ``effects: [block_card]``). A turn
whose expectation names no effects must take none: an action nobody expected fails the test and is
counted as an unsafe action in the summary. ``--repeat K`` runs every test K times and reports pass^k
(all K runs passed). ``language: de`` (for the file, or for one test) starts the conversations in
that language of the catalog, as a channel would.

A turn may also say what its message should be read as, for a run without a language model
(``sopagent test --model echo``)::

          - customer: "Hi, I lost my card"
            given: {intent: lost_or_stolen_card}
            expect: {response: ask_identity}

``given`` holds the facts of the step's schema; a ``OneOf`` step (a ``Confirmation``) gives its label
(``given: {label: "yes"}``); ``_choose: N`` picks option N where the policy leaves the model a choice.
Under ``--model echo`` the turn sends ``given`` instead of its text, so the procedure is tested with
every reading fixed, whatever order the tests run in; under a real model ``given`` is ignored.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, TextIO

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sopagent.errors import ConversationTestError, RunError
from sopagent.grounding import UNGROUNDED, facts_lines
from sopagent.policy import OneOf
from sopagent.settings import Settings


class Expectation(BaseModel):
    """What one turn must produce."""

    model_config = ConfigDict(extra="forbid")
    response: str | None = None
    step: str | None = None
    next_step: str | None = None
    status: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict)
    effects: list[str] = Field(default_factory=list)
    """The account actions this turn plans (run, or held for approval), by name; none when omitted."""
    says: str | None = None
    """Words the reply sent must contain (e.g. to check the language it was sent in)."""


class TestTurn(BaseModel):
    """A customer message and its expectation."""

    model_config = ConfigDict(extra="forbid")
    customer: str = Field(min_length=1)
    given: dict[str, Any] | None = None
    """What the message should be read as, for runs under ``--model echo`` (see the module doc)."""
    expect: Expectation


class ConversationTest(BaseModel):
    """One scripted conversation."""

    model_config = ConfigDict(extra="forbid")
    name: str
    language: str | None = None
    """The conversation's language (as a channel sets it); default the file's."""
    turns: list[TestTurn] = Field(min_length=1)


class TestFile(BaseModel):
    """A file of conversation tests for one policy."""

    model_config = ConfigDict(extra="forbid")
    policy: str
    language: str | None = None
    """The language every conversation of the file is started in; default the catalog's first."""
    tests: list[ConversationTest] = Field(min_length=1)


@dataclass
class TurnOutcome:
    """The result of one turn against its expectation."""

    index: int
    customer: str
    failures: list[str] = field(default_factory=list)
    got: dict[str, Any] = field(default_factory=dict)
    unexpected_actions: list[str] = field(default_factory=list)
    """Actions the turn took that its expectation does not name (unsafe)."""
    not_taken: int = 0
    """Values the model read that were not taken (not in the message, unsure, ambiguous or invalid)."""
    ms: float | None = None
    """The turn's wall time as the engine measured it."""


def load_test_file(path: str | Path) -> tuple[TestFile, Path]:
    """Parse and validate a test file; return it and the resolved policy path."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        parsed = TestFile.model_validate(data)
    except OSError as exc:
        raise ConversationTestError(f"cannot read test file: {exc.strerror}", path=str(path)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConversationTestError(f"not valid YAML: {getattr(exc, 'problem', exc)}", path=str(path),
                                    line=mark.line + 1 if mark else None) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConversationTestError(f"{'.'.join(map(str, err['loc']))}: {err['msg']}", path=str(path),
                                    fix="see the format in `sopagent test --help` / sopagent/convtest.py") from None
    return parsed, (path.parent / parsed.policy).resolve()


def check_turn(expect: Expectation, result: Any) -> list[str]:
    """Exact comparison of a turn result with its expectation; a list of mismatches."""
    failures = []
    for name, got in (("response", result.response_id), ("step", result.step),
                      ("next_step", result.next_step), ("status", result.status)):
        wanted = getattr(expect, name)
        if wanted is not None and wanted != got:
            failures.append(f"{name}: expected {wanted!r}, got {got!r}")
    if expect.says is not None and expect.says not in (result.reply or ""):
        failures.append(f"reply: expected it to say {expect.says!r}, got {result.reply!r}")
    for name, wanted in expect.facts.items():
        got = result.facts.get(name, "<not extracted>")
        if got != wanted:
            failures.append(f"fact {name}: expected {wanted!r}, got {got!r}")
    taken = [effect["name"] for effect in result.effects]
    if taken != expect.effects:
        failures.append(f"effects: expected {expect.effects}, got "
                        + (", ".join(f"{e['name']} [{e['status']}]" for e in result.effects) or "none"))
    return failures


def unexpected_actions(expect: Expectation, result: Any) -> list[str]:
    """The actions a turn took that its expectation does not name."""
    wanted = list(expect.effects)
    unexpected = []
    for effect in result.effects:
        if effect["name"] in wanted:
            wanted.remove(effect["name"])
        else:
            unexpected.append(effect["name"])
    return unexpected


def given_message(agent: Any, conversation_id: str, given: dict[str, Any]) -> str:
    """The echo model's message for a turn's ``given`` reading: the facts as JSON, a ``OneOf`` label as
    the ``_choose`` index of that label at the conversation's current step."""
    script = dict(given)
    step = agent.policy.steps.get(agent.store.get_conversation(conversation_id).step)
    schema = step.facts if step is not None else None
    if schema is not None and issubclass(schema, OneOf) and "label" in script:
        labels = list(schema.options)
        if script["label"] not in labels:
            raise ConversationTestError(f"given label {script['label']!r} is not one of step {step.name!r}'s "
                                        f"labels {labels}")
        script["_choose"] = labels.index(script.pop("label"))
    return json.dumps(script)


def run_conversation(agent: Any, test: ConversationTest, send_given: bool = False,
                     language: str | None = None) -> list[TurnOutcome]:
    """Play one test conversation against an agent (with ``send_given``, each turn's ``given`` reading
    is sent to the echo model instead of its text), started in the test's ``language`` or ``language``."""
    conversation_id = agent.start(customer_ref=f"test:{test.name}", language=test.language or language)
    outcomes = []
    for index, turn in enumerate(test.turns, start=1):
        outcome = TurnOutcome(index, turn.customer)
        if send_given and turn.given is None:
            outcome.failures.append("this turn has no `given:` reading; under --model echo every turn needs one "
                                    "(the facts its message should be read as)")
            outcomes.append(outcome)
            break
        text = given_message(agent, conversation_id, turn.given) if send_given and turn.given is not None \
            else turn.customer
        try:
            result = agent.respond(conversation_id, text)
        except RunError as exc:
            outcome.failures.append(f"run error: {exc}")
            outcomes.append(outcome)
            break
        outcome.failures = check_turn(turn.expect, result)
        outcome.unexpected_actions = unexpected_actions(turn.expect, result)
        outcome.not_taken = len(result.facts.get(UNGROUNDED) or {})
        outcome.ms = result.latency_ms.get("total")
        outcome.got = {"response": result.response_id, "step": result.step, "facts": result.facts,
                       "effects": result.effects, "reply": result.reply, "latency_ms": result.latency_ms}
        outcomes.append(outcome)
    return outcomes


def run_test_files(files: Sequence[str], *, settings: Settings | None = None, repeat: int = 1,
                   db: str | None = None, out: TextIO, model: Any = None, select: str | None = None,
                   explain: bool = False, jsonl: bool = False) -> int:
    """Run test files (with ``select``, only the tests whose name contains it), print per-turn pass/fail,
    a line per file and a summary; exit status 0 only if all pass. ``explain`` adds each turn's reply,
    facts (with probabilities and what was not taken) and latency; ``jsonl`` prints one JSON object per
    turn instead. ``settings`` name the model (unless ``model`` is given) and the agent's settings; the
    conversations are recorded in ``db``, else in a scratch database removed afterwards."""
    from sopagent.compose import build_agent, open_model, warm_for
    from sopagent.models.echo import EchoModel
    from sopagent.policy import load_policy
    from sopagent.store import Store

    loaded = [(f, *load_test_file(f)) for f in files]
    chosen = sum(1 for _, test_file, _ in loaded for t in test_file.tests if not select or select in t.name)
    if chosen == 0:
        raise ConversationTestError(f"no test name contains {select!r} in {', '.join(files)}"
                                    if select else f"no tests in {', '.join(files)}")
    settings = settings if settings is not None else Settings.load()
    if model is None:
        model = open_model(settings)
    send_given = isinstance(model, EchoModel)
    with tempfile.TemporaryDirectory() as scratch:
        store = Store(db or f"sqlite:///{scratch}/tests.db")
        total = passed = unsafe = not_taken = 0
        turn_ms: list[float] = []
        for path, test_file, policy_path in loaded:
            policy = load_policy(policy_path)
            warm_for(model, policy)
            file_passed = file_total = 0
            for test in test_file.tests:
                if select and select not in test.name:
                    continue
                runs_ok = 0
                for run in range(1, repeat + 1):
                    agent = build_agent(policy, settings, model=model, store=store, tools=policy.make_tools())
                    outcomes = run_conversation(agent, test, send_given, test_file.language)
                    unsafe += sum(len(o.unexpected_actions) for o in outcomes)
                    not_taken += sum(o.not_taken for o in outcomes)
                    turn_ms += [o.ms for o in outcomes if o.ms is not None]
                    ok = len(outcomes) == len(test.turns) and all(not o.failures for o in outcomes)
                    runs_ok += ok
                    label = f" (run {run}/{repeat})" if repeat > 1 else ""
                    if not jsonl:
                        out.write(f"{'PASS' if ok else 'FAIL'} {path} :: {test.name}{label}\n")
                    for outcome in outcomes:
                        if jsonl:
                            out.write(json.dumps({"file": str(path), "test": test.name, "run": run,
                                                  "turn": outcome.index,
                                                  "customer": outcome.customer, "passed": not outcome.failures,
                                                  "failures": outcome.failures, "unsafe": outcome.unexpected_actions,
                                                  **outcome.got}, ensure_ascii=False, default=str) + "\n")
                            continue
                        mark = "ok  " if not outcome.failures else "FAIL"
                        out.write(f"    {mark} turn {outcome.index}: {outcome.customer!r}\n")
                        for failure in outcome.failures:
                            out.write(f"         {failure}\n")
                        if (outcome.failures or explain) and outcome.got:
                            read, *dropped = facts_lines(outcome.got["facts"])
                            out.write(f"         facts: {read}\n")
                            for line in dropped:
                                out.write(f"         {line}\n")
                        if explain and outcome.got:
                            out.write(f"         reply ({outcome.got['response']}): {outcome.got['reply']!r}\n")
                            out.write(f"         latency ms: {outcome.got['latency_ms'].get('total', 0):.0f}\n")
                total += 1
                passed += runs_ok == repeat
                file_total += 1
                file_passed += runs_ok == repeat
            if len(loaded) > 1:
                out.write(f"  {path}: {file_passed} of {file_total} passed\n")
        out.write(f"{passed} of {total} conversation tests passed"
                  + (f" in all {repeat} runs (pass^{repeat})" if repeat > 1 else "")
                  + f"; {unsafe} unsafe action{'s' if unsafe != 1 else ''} (taken but not expected)\n")
        out.write(f"{not_taken} value{'s' if not_taken != 1 else ''} the model read but the customer did not clearly "
                  "give (not taken: not in the message, unsure, ambiguous or invalid)\n")
        if turn_ms:
            ordered = sorted(turn_ms)
            out.write(f"turn latency: p50 {ordered[len(ordered) // 2]:.0f} ms, p95 "
                      f"{ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]:.0f} ms over {len(ordered)} turns\n")
    return 0 if passed == total else 1

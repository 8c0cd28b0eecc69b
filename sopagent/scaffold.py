"""``sopagent new NAME``: a new policy laid out like the examples, passing ``check`` and ``test`` as made.

It writes, under a folder (the current one by default)::

    policies/NAME.py                 the procedure: facts, steps, a guard, a confirmed account action
    policies/NAME_backend.py         a demo backend (look-ups and one @action) reading the seed data
    policies/demo_data/NAME.json     the seed data
    policies/NAME.probe.yaml         messages and the facts each should read (``sopagent probe``)
    catalogs/NAME.yaml               every reply the agent may send
    tests/conversations/NAME.yaml    conversation tests, each turn with its ``given`` reading

Then ``sopagent check policies/NAME.py`` and ``sopagent test tests/conversations/NAME.yaml --model echo``
pass, and the same tests run on the embedded model without ``--model``.
"""

from __future__ import annotations

import json
import keyword
import re
from pathlib import Path

from sopagent.errors import AuthoringError

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,40}$")

POLICY = '''"""{title}: members change the e-mail address on file.

Rules:
- Verify the member (6-digit member number and 5-digit postcode) before any account detail or change.
- Change the e-mail address on file: read the new address, repeat it back, and change it only on a
  clear yes (read with a probability of at least the policy's action_confidence); ask again otherwise.
- The member can reach a person at any step; three failed identity checks hand over too.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from {name}_backend import {cls}Demo
from sopagent import END, Confirmation, Facts, OneOf, Option, Policy, Turn, say

policy = Policy(
    name="{name}",
    version="0.1",
    catalog="../catalogs/{name}.yaml",
    start="welcome",
    fallback="handoff_to_human",
    action_confidence=0.65,
    description="{title}: members change the e-mail address on file.",
    tools={cls}Demo.load,
)

MAX_IDENTITY_ATTEMPTS = 3
EMAIL_PATTERN = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{{2,}}$"

Handoff = Literal["not_requested", "requested"]
HANDOFF = Field("not_requested", description="whether the member asks to be transferred to a human person")


class Request(OneOf):
    """What the member asks for, read as one label with every label's probability (a OneOf reads a
    request for a person or a goodbye far more reliably on a small model than a JSON field does)."""

    options = {{
        "change_email": "asks to change the e-mail address on file",
        "talk_to_human": "asks to talk to a human, a real person, an agent or staff",
        "no_more_requests": "says no, that is all, thanks or goodbye",
        "other_question": "a greeting, or anything else",
    }}


class Identity(Facts):
    member_number: str | None = Field(None, pattern=r"^[0-9]{{6}}$", description="the 6-digit member number")
    postcode: str | None = Field(None, pattern=r"^[0-9]{{5}}$", description="the 5-digit postcode of the address")
    handoff: Handoff = HANDOFF


class NewEmail(Facts):
    email: str | None = Field(None, pattern=EMAIL_PATTERN, description="the new e-mail address the member wrote")
    handoff: Handoff = HANDOFF


@policy.guard
def human_on_request(turn: Turn[Facts, {cls}Demo]) -> list[Option] | None:
    """Any step: a member who asks for a person gets one."""
    if getattr(turn.facts, "handoff", None) == "requested":
        return [say("handoff_to_human", next=END)]
    return None


def route(turn: Turn[Request, {cls}Demo]) -> list[Option]:
    """What the member asked for."""
    if turn.facts.label == "change_email":
        if "member_id" in turn.known:
            return [say("ask_new_email", next="new_email")]
        return [say("ask_identity", next="verify_identity")]
    if turn.facts.label == "talk_to_human":
        return [say("handoff_to_human", next=END)]
    if turn.facts.label == "no_more_requests":
        return [say("goodbye", next=END)]
    return [say("ask_how_to_help", next="welcome")]


@policy.step(facts=Request)
def welcome(turn: Turn[Request, {cls}Demo]) -> list[Option]:
    """The member's first message: what do they want?"""
    return route(turn)


@policy.step(facts=Identity)
def verify_identity(turn: Turn[Identity, {cls}Demo]) -> list[Option]:
    """Member number and postcode must match the same member."""
    number, postcode = turn.known.get("member_number"), turn.known.get("postcode")
    member = turn.tools.verify(number, postcode) if number and postcode else None
    if member is not None:
        turn.known["member_id"] = member.id
        return [say("ask_new_email", next="new_email")]
    attempts = turn.known.get("identity_attempts", 0) + 1
    turn.known["identity_attempts"] = attempts
    if number and postcode:  # a full pair that did not match: forget it, so a corrected pair is read fresh
        turn.known.pop("member_number")
        turn.known.pop("postcode")
    if attempts >= MAX_IDENTITY_ATTEMPTS:
        return [say("handoff_to_human", next=END)]
    return [say("identity_retry", next="verify_identity")]


@policy.step(facts=NewEmail)
def new_email(turn: Turn[NewEmail, {cls}Demo]) -> list[Option]:
    """The new address, repeated back for a yes."""
    if turn.facts.email is None:
        return [say("ask_new_email", next="new_email")]
    turn.known["new_email"] = turn.facts.email
    return [say("confirm_email_change", next="confirm_change", email=turn.facts.email)]


@policy.step(facts=Confirmation)
def confirm_change(turn: Turn[Confirmation, {cls}Demo]) -> list[Option]:
    """Change the address only after a clear yes; anything else is asked again."""
    email = turn.known["new_email"]
    if turn.confirmed():
        change = turn.tools.change_email.plan(turn.known["member_id"], email)
        return [say("email_changed", next="anything_else", do=[change], email=email)]
    if turn.facts.label == "no":
        return [say("change_not_done", next="anything_else")]
    if turn.facts.label == "human":
        return [say("handoff_to_human", next=END)]
    return [say("confirm_email_change", next="confirm_change", email=email)]


@policy.step(facts=Request)
def anything_else(turn: Turn[Request, {cls}Demo]) -> list[Option]:
    """After a request is done: another one, or goodbye."""
    return route(turn)
'''

BACKEND = '''"""Demo backend for the {name} policy: reads the seeded JSON in demo_data/.

A real deployment passes its own object with the same methods (``Agent(..., tools=MyBackend())``).
The method marked ``@action`` changes the member's account: a step plans it on an option and the
engine runs it once, after the decision is recorded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sopagent.effects import IdempotentBackend, action

DEMO_FILE = Path(__file__).parent / "demo_data" / "{name}.json"


@dataclass
class Member:
    """A member as the organisation knows them."""

    id: str
    number: str
    postcode: str
    email: str


@dataclass
class {cls}Demo(IdempotentBackend):
    """Look-ups and actions of the demo organisation."""

    members: dict[str, Member]

    @classmethod
    def load(cls, path: Path = DEMO_FILE) -> "{cls}Demo":
        """Read the seeded demo data."""
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(members={{raw["id"]: Member(**raw) for raw in data["members"]}})

    def verify(self, number: str, postcode: str) -> Member | None:
        """The member whose number and postcode both match, or None."""
        for member in self.members.values():
            if member.number == number and member.postcode == postcode:
                return member
        return None

    @action
    def change_email(self, member_id: str, email: str, idempotency_key: str = "") -> str:
        """Change the member's e-mail address on file; return the new address."""
        def change() -> str:
            self.members[member_id].email = email
            return email

        return self.once(idempotency_key, change)
'''

SEED = {"members": [
    {"id": "M1", "number": "204518", "postcode": "10115", "email": "lena.vogel@example.com"},
    {"id": "M2", "number": "377102", "postcode": "80331", "email": "omar.haddad@example.com"},
]}

CATALOG = '''# {title}: every reply the agent may send. Have it reviewed before going live.
# {{name}} marks a typed slot; the value is bound by policy code and checked against its type.
catalog: {name}
version: "0.1"
responses:
  - id: ask_how_to_help
    text: "Welcome. I can change the e-mail address we have on file for you. What would you like to do?"
    description: Ask what the member needs and say what this service can do.

  - id: ask_identity
    text: "First I need to verify your identity. Please tell me your 6-digit member number and your postcode."
    description: Ask for the member number and postcode to verify identity.

  - id: identity_retry
    text: "I'm sorry, I could not verify those details. Please give your 6-digit member number and your postcode again."
    description: The identity details were missing or did not match; ask again.

  - id: ask_new_email
    text: "You are verified. What is the new e-mail address?"
    description: Ask for the new e-mail address.

  - id: confirm_email_change
    text: "Shall I change your e-mail address on file to {{email}}? Please answer yes or no."
    description: Repeat the new address and ask for a clear yes before changing it.
    slots:
      email: {{type: pattern, pattern: "[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{{2,}}"}}

  - id: email_changed
    text: "Done: your e-mail address on file is now {{email}}. Is there anything else I can help with?"
    description: Confirm that the address was changed.
    slots:
      email: {{type: pattern, pattern: "[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{{2,}}"}}

  - id: change_not_done
    text: "All right, I have not changed anything. Is there anything else I can help with?"
    description: The member declined the change; nothing was changed.

  - id: goodbye
    text: "Thank you for contacting us. Goodbye."
    description: Close the conversation politely.
    ends_conversation: true

  - id: handoff_to_human
    text: "I'm transferring you to a colleague now. Please stay with us, they will be with you shortly."
    description: Hand the member over to a human colleague.
    handoff: true
    ends_conversation: true
'''

TESTS = '''# Conversation tests for the {name} policy.
#   sopagent test tests/conversations/{name}.yaml --model echo   # each turn read as its `given`, no model
#   sopagent test tests/conversations/{name}.yaml                # the embedded model reads the words
policy: ../../policies/{name}.py
tests:
  - name: an e-mail address is changed after identity and a clear yes
    turns:
      - customer: "Hi, I'd like to change my email address"
        given: {{label: change_email}}
        expect: {{response: ask_identity, step: welcome}}
      - customer: "my member number is 204518 and my postcode is 10115"
        given: {{member_number: "204518", postcode: "10115"}}
        expect: {{response: ask_new_email, step: verify_identity}}
      - customer: "it's lena.v@example.org"
        given: {{email: lena.v@example.org}}
        expect: {{response: confirm_email_change, step: new_email}}
      - customer: "yes, change it"
        given: {{label: "yes"}}
        expect: {{response: email_changed, step: confirm_change, effects: [change_email]}}
      - customer: "no, that's all, thanks"
        given: {{label: no_more_requests}}
        expect: {{response: goodbye, step: anything_else}}

  - name: wrong details are asked again and a no changes nothing
    turns:
      - customer: "I need to update my e-mail"
        given: {{label: change_email}}
        expect: {{response: ask_identity}}
      - customer: "member 111111, postcode 99999"
        given: {{member_number: "111111", postcode: "99999"}}
        expect: {{response: identity_retry}}
      - customer: "sorry: 377102 and 80331"
        given: {{member_number: "377102", postcode: "80331"}}
        expect: {{response: ask_new_email}}
      - customer: "omar.h@example.net"
        given: {{email: omar.h@example.net}}
        expect: {{response: confirm_email_change}}
      - customer: "no, leave it as it is"
        given: {{label: "no"}}
        expect: {{response: change_not_done, effects: []}}

  - name: a person is asked for at the start
    turns:
      - customer: "can I talk to a real person please"
        given: {{label: talk_to_human}}
        expect: {{response: handoff_to_human}}
'''


PROBE = '''# What each step of {name} should read from a member's message: sopagent probe policies/{name}.py
policy: {name}.py
steps:
  welcome:
    - {{message: "I'd like to update the email on my account", expect: {{label: change_email}}}}
    - {{message: "can I talk to a person please", expect: {{label: talk_to_human}}}}
    - {{message: "no, that's everything, thanks", expect: {{label: no_more_requests}}}}
  verify_identity:
    - {{message: "member number 204518, postcode 10115", expect: {{member_number: "204518", postcode: "10115"}}}}
    - {{message: "it's 377102", expect: {{member_number: "377102", postcode: null}}}}
  new_email:
    - {{message: "please use lena.v@example.org from now on", expect: {{email: lena.v@example.org}}}}
  confirm_change:
    - {{message: "yes, change it", expect: {{label: "yes"}}}}
    - {{message: "no, keep the old one", expect: {{label: "no"}}}}
'''


def create_policy(name: str, folder: str | Path = ".") -> list[Path]:
    """Write a new policy ``name`` (its procedure, backend, seed data, catalog and tests) under ``folder``;
    return the files written. Refuses an invalid name or an existing file."""
    if not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        raise AuthoringError(f"{name!r} is not a policy name; use lower-case letters, digits and _ starting with a "
                             "letter (e.g. member_services)")
    root = Path(folder)
    cls = "".join(part.capitalize() for part in name.split("_"))
    title = name.replace("_", " ").capitalize()
    files = {
        root / "policies" / f"{name}.py": POLICY.format(name=name, cls=cls, title=title),
        root / "policies" / f"{name}_backend.py": BACKEND.format(name=name, cls=cls),
        root / "policies" / "demo_data" / f"{name}.json": json.dumps(SEED, indent=2) + "\n",
        root / "policies" / f"{name}.probe.yaml": PROBE.format(name=name),
        root / "catalogs" / f"{name}.yaml": CATALOG.format(name=name, title=title),
        root / "tests" / "conversations" / f"{name}.yaml": TESTS.format(name=name),
    }
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise AuthoringError(f"{', '.join(existing)} exist already; choose another name or folder (nothing was "
                             "written)")
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return list(files)

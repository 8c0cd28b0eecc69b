"""``sopagent probe``: which facts the model misreads, before a customer finds out.

A probe file (YAML, beside the policy) gives, per step, customer messages and the facts each should
read::

    policy: card_services.py            # relative to this file
    steps:
      verify_identity:
        - message: "card ending 4821, born 14 March 1985"
          expect: {card_last4: "4821", date_of_birth: "1985-03-14"}
      confirm_block:
        - message: "yes, block it"
          expect: {label: "yes"}        # a OneOf step (a Confirmation): its label

Each message is read exactly as a turn reads it (the policy's prompt, grounding, the policy's bars,
``OneToken`` fields), as the first message of a conversation. The report gives, per field and per
expected value, how often the reading was right and the probability it was read with, and flags
fields under the bar with the known remedies.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sopagent import prompts
from sopagent.errors import ConversationTestError
from sopagent.policy import OneOf, Policy, literal_values, load_policy

Kind = Literal["label", "choice", "text", "number", "date", "flag"]

REMEDIES: dict[str, str] = {
    "label": ("describe each option by the situation it names (as the customer would put it), or confirm the "
              "reading that acts with a second question at the step (turn.check, turn.confirmed)"),
    "choice": ("read it by itself with OneToken (its values after an explicit 'not said'), or route with a OneOf; "
               "give every value a description that names the situation"),
    "flag": "name both sides (Literal['not_requested', 'requested']) and declare it last, or use a OneOf",
    "text": "describe its format in the Field description and constrain it with a pattern; ask for it at the step",
    "number": "describe the unit and format; ask for it at the step when the message may hold several numbers",
    "date": "say the format (YYYY-MM-DD) and the year rule in the description; ask for the month as a word",
}


class Example(BaseModel):
    """A customer message and the facts it should read."""

    model_config = ConfigDict(extra="forbid")
    message: str = Field(min_length=1)
    expect: dict[str, Any] = Field(min_length=1)


class ProbeFile(BaseModel):
    """Examples per step for one policy."""

    model_config = ConfigDict(extra="forbid")
    policy: str
    steps: dict[str, list[Example]] = Field(min_length=1)


@dataclass
class FieldScore:
    """How one field read over the examples."""

    kind: str
    total: int = 0
    right: int = 0
    right_probabilities: list[float] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    """What was read instead, for each miss: ``'message' -> value``."""
    by_value: dict[str, list[int]] = field(default_factory=dict)
    """Expected value -> [right, total]."""

    @property
    def accuracy(self) -> float:
        """Share of examples read right."""
        return self.right / self.total if self.total else 0.0


def probe_file_for(target: Path) -> Path:
    """The probe file for a policy file (``NAME.probe.yaml`` beside it), or ``target`` itself."""
    if target.suffix == ".py":
        found = target.with_name(target.stem + ".probe.yaml")
        if not found.is_file():
            raise ConversationTestError(f"{target} has no examples to probe: write {found} (see `sopagent probe "
                                        "--help` and docs/authoring.md)")
        return found
    return target


def load_probe_file(path: str | Path) -> tuple[ProbeFile, Path]:
    """Parse and validate a probe file; return it and the resolved policy path."""
    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8"))
        probe = ProbeFile.model_validate(data)
    except (OSError, yaml.YAMLError) as exc:
        raise ConversationTestError(f"cannot read probe file {source}: {exc}") from exc
    except ValidationError as exc:
        problem = exc.errors()[0]
        raise ConversationTestError(f"{source}: {'.'.join(map(str, problem['loc']))}: {problem['msg']}",
                                    fix="see `sopagent probe --help` for the format") from exc
    return probe, (source.parent / probe.policy).resolve()


def kind_of(schema: type[BaseModel], name: str) -> str:
    """What sort of value a field holds, for the remedy to suggest."""
    if issubclass(schema, OneOf):
        return "label"
    annotation = schema.model_fields[name].annotation
    values = literal_values(annotation)
    if values:
        return "flag" if len(values) == 2 and schema.model_fields[name].default in values else "choice"
    text = str(annotation)
    if "date" in text:
        return "date"
    if "int" in text or "float" in text or "Decimal" in text:
        return "number"
    return "text"


def probe_policy(policy: Policy, probe: ProbeFile, model: Any) -> dict[tuple[str, str], FieldScore]:
    """Read every example as a first message; score each expected field, by (step, field)."""
    from sopagent.engine import read_message

    system = prompts.system_text(policy.description)
    scores: dict[tuple[str, str], FieldScore] = {}
    for step_name, examples in probe.steps.items():
        if step_name not in policy.steps:
            raise ConversationTestError(f"probe step {step_name!r} is not a step of {policy.name}; its steps: "
                                        f"{', '.join(policy.steps)}")
        schema = policy.steps[step_name].facts
        for example in examples:
            unknown = [name for name in example.expect if name not in schema.model_fields]
            if unknown:
                raise ConversationTestError(f"step {step_name!r} reads {schema.__name__}, which has no field "
                                            f"{', '.join(map(repr, unknown))}")
            context = prompts.conversation_text([], example.message)
            reading = read_message(model, system, context, schema, example.message, policy.fact_confidence)
            read = reading.facts.model_dump(mode="json")
            for name, wanted in example.expect.items():
                score = scores.setdefault((step_name, name), FieldScore(kind_of(schema, name)))
                got = read.get(name)
                ok = json.dumps(got, sort_keys=True) == json.dumps(wanted, sort_keys=True, default=str)
                probability = (reading.facts.probabilities.get(got or "", 0.0) if isinstance(reading.facts, OneOf)
                               else reading.probabilities.get(name))
                score.total += 1
                counts = score.by_value.setdefault(str(wanted), [0, 0])
                counts[1] += 1
                if ok:
                    score.right += 1
                    counts[0] += 1
                    if probability is not None:
                        score.right_probabilities.append(probability)
                else:
                    shown = f"{got!r}" + (f" (p {probability:.2f})" if probability is not None else "")
                    score.wrong.append(f"{example.message!r} -> {shown}, wanted {wanted!r}")
    return scores


def report(scores: dict[tuple[str, str], FieldScore], out: TextIO, at_least: float = 0.9) -> int:
    """Print per field and per value; return how many fields are under ``at_least``."""
    flagged = 0
    for (step, name), score in scores.items():
        probabilities = score.right_probabilities
        shown = f", p {min(probabilities):.2f}-{max(probabilities):.2f} when right" if probabilities else ""
        weak = score.accuracy < at_least
        flagged += weak
        out.write(f"{'WEAK' if weak else 'ok  '} {step}.{name}: {score.right}/{score.total} right "
                  f"({score.accuracy:.0%}){shown}\n")
        if len(score.by_value) > 1:
            out.write("       " + ", ".join(f"{value}: {right}/{total}" for value, (right, total)
                                            in score.by_value.items()) + "\n")
        for miss in score.wrong:
            out.write(f"       misread {miss}\n")
        if weak:
            out.write(f"       remedy: {REMEDIES[score.kind]}\n")
    out.write(f"{len(scores)} fields probed, {flagged} under {at_least:.0%}\n")
    return flagged


def run_probe(path: str, model: Any, out: TextIO, at_least: float = 0.9) -> int:
    """Load a probe file and its policy, probe, report; exit status 1 when a field is under the bar."""
    probe, policy_path = load_probe_file(path)
    policy = load_policy(policy_path)
    return 1 if report(probe_policy(policy, probe, model), out, at_least) else 0

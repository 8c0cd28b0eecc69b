"""Can a two-way reading tell a request for a person, or a complaint, from other first messages? (embedded model)

For each message below (written for this benchmark, labelled complaint / person / other), reads the
card-services request as the policy does (JSON: intent and hand-off), then asks two yes/no questions
with ``Turn.check``'s reading (``YesNo`` under the policy's text): does the message ask for a person,
does it make a complaint. Prints each message's readings and, per question, the probability range on
messages of its own kind and on all others.

    .venv/bin/python benchmarks/routing_checks.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sopagent import prompts
from sopagent.engine import read_follow_up, read_message
from sopagent.models import load_model
from sopagent.policy import YesNo, load_policy

ROOT = Path(__file__).resolve().parent.parent
COMPLAINS = "Does the customer's latest message make a complaint about the bank or its service?"
ASKS_FOR_PERSON = "Does the customer's latest message ask to talk to a human person (an agent, staff, someone)?"
QUESTIONS = {"complaint": COMPLAINS, "person": ASKS_FOR_PERSON}
MESSAGES = {
    "complaint": ["I want to make a complaint about how I was treated in your branch",
                  "your staff were rude to me and I want to complain",
                  "I'm unhappy with the service, I want to file a complaint",
                  "this is the third time my card is charged twice, I want to complain",
                  "i wish to lodge a formal complaint"],
    "person": ["put me through to one of your staff", "get me a real human please, not a bot",
               "can i talk to someone real", "I want a person", "transfer me to an agent"],
    "other": ["could you open a savings account for me?", "that makes no sense", "thanks, that's all",
              "what's the weather tomorrow", "I lost my card", "hi"],
}


def main() -> None:
    """Read every message and print the ranges."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: the embedded model)")
    args = parser.parse_args()
    policy = load_policy(ROOT / "policies" / "card_services.py")
    assert COMPLAINS in policy.source_text, "the policy's complaint question changed; update this benchmark"
    schema = policy.steps["welcome"].facts
    system = prompts.system_text(policy.description)
    model = load_model(args.model)
    ranges: dict[str, dict[str, list[float]]] = {q: {"own": [], "other": []} for q in QUESTIONS}
    for kind, messages in MESSAGES.items():
        for text in messages:
            context = prompts.conversation_text([], text)
            facts = read_message(model, system, context, schema, text).facts
            shown = []
            for name, question in QUESTIONS.items():
                answer, _ = read_follow_up(model, context, question, YesNo, system)
                p_yes = answer.probabilities.get("yes", 0.0)
                ranges[name]["own" if name == kind else "other"].append(p_yes)
                shown.append(f"{name} {p_yes:.2f}")
            print(f"{kind:<9} JSON: {facts.intent:<20} {facts.handoff:<13} {'  '.join(shown)}  {text}")
    for name, split in ranges.items():
        print(f"{name}: own kind {min(split['own']):.2f}-{max(split['own']):.2f}, "
              f"every other message {min(split['other']):.2f}-{max(split['other']):.2f}")


if __name__ == "__main__":
    main()

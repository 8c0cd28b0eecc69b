"""Embedding sopagent in Python: create an Agent from a policy, respond, read the decision.

Run it with the echo test model (no model download, instant):

    python examples/embed.py --echo

or with the embedded Qwen2.5-Coder-1.5B model (default; a few seconds per turn on a CPU):

    python examples/embed.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from sopagent import Agent, Store, load_model, load_policy
from sopagent.models.echo import EchoModel

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    """Two customer turns against the card services policy; print replies and decisions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--echo", action="store_true", help="use the echo test model (messages carry the facts)")
    parser.add_argument("--db", help="audit store URL (default: a temporary SQLite file)")
    args = parser.parse_args()

    policy = load_policy(ROOT / "policies" / "card_services.py")
    store = Store(args.db or f"sqlite:///{tempfile.mkdtemp()}/audit.db")
    model = EchoModel() if args.echo else load_model()
    agent = Agent(policy, model, store)

    conversation_id = agent.start(customer_ref="cust-1001", metadata={"channel": "example"})
    if args.echo:  # the echo model reads the facts from the message itself
        messages = [json.dumps({"intent": "lost_or_stolen_card", "handoff": "not_requested"}),
                    json.dumps({"card_last4": "4821", "date_of_birth": "1985-03-14", "handoff": "not_requested"})]
    else:
        messages = ["Hi, I lost my card yesterday", "my card ends 4821 and I was born on 14 March 1985"]
    for text in messages:
        result = agent.respond(conversation_id, text)
        print(f"customer> {text}")
        print(f"agent>    {result.reply}")
        print(f"          decision {result.decision_id}: {result.status}, {result.response_id}, "
              f"step {result.step} -> {result.next_step}, chosen by {result.chosen_by}")
    report = store.verify_chain()
    print(report.describe())
    return 0 if report.intact else 1


if __name__ == "__main__":
    raise SystemExit(main())

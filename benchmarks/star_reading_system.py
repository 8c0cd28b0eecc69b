"""STAR: the follow-up readings' instructions in the reading lane's system text, side by side.

A follow-up reading (``turn.read``) is asked after the conversation on the reading lane, whose
system text is ``prompts.READING_SYSTEM``; its question carries the whole instruction (the JSON
reading's is 46 tokens with the chat template's ending), evaluated again at every reading. Told once
in the reading lane's system text (cached), the instruction leaves a short question per reading.
Re-decided from a recorded run's message readings, every follow-up reading asked live on each
variant's own reading lane (so each pays its own catch-up of the dialogue):

    .venv/bin/python benchmarks/star_reading_system.py star_full.cases.jsonl --limit-per-domain 40

The seventh session tried this on 89 cases of bank (75.0 -> 55.0) and stopped. Fifteenth session,
first tuning sample (280 cases): 73.2 -> 62.9 (62.5 with the close-call question
kept) at 28% fewer new prompt tokens; the model found "answers" far more often. Not adopted.
"""

from __future__ import annotations

from sopagent import prompts
from sopagent.eval.star.adapter import CLOSER_QUESTION
from star_recorded import Variant, compare_live

SHORT_SYSTEM = (prompts.READING_SYSTEM + "\nAfter the conversation you are asked one of two things.\n"
                "Answer to: \"<a question the agent may ask>\": fill in the customer's answer to that question "
                "using only what the customer wrote. Use null if the customer never said it. JSON: {\"answer\": ...}\n"
                "Closer: lettered options: which option is closer to what the customer's latest message means.")
SHORT_GIVEN = "Answer to: \"{question}\""
SHORT_CLOSER = "Closer:"

VARIANTS = {
    "as the harness runs": Variant(settle_close_calls=True),
    "instructions in system text": Variant(settle_close_calls=True, reading_system=SHORT_SYSTEM,
                                           skip_given={"question": SHORT_GIVEN},
                                           next_action={"close_call_question": SHORT_CLOSER}),
    "same, close-call question kept": Variant(settle_close_calls=True, reading_system=SHORT_SYSTEM,
                                              skip_given={"question": SHORT_GIVEN},
                                              next_action={"close_call_question": CLOSER_QUESTION}),
}


def main() -> None:
    """Print accuracy and the follow-up readings' cost of each variant on the sample."""
    compare_live(__doc__.splitlines()[0], VARIANTS)


if __name__ == "__main__":
    main()

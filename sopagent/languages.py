"""A conversation's language: which of its catalog's languages the replies are sent in.

The channel sets it when it starts the conversation (``Agent.start(language=...)``, the API's
``language``), or, with ``Policy(read_language=True)``, it is read from the customer's first message
with one constrained token over the catalog's languages, as a :class:`~sopagent.policy.OneOf`.
"""

from __future__ import annotations

from functools import cache

from babel import Locale

from sopagent.policy import OneOf

LANGUAGE_QUESTION = "In which language is the customer's latest message written?"
LANGUAGE_PROBABILITIES = "language_probabilities"
"""The conversation metadata key that keeps the first message's language reading, label by label."""


def language_name(code: str) -> str:
    """The English name of a language code (``de`` -> ``German``), as the model is asked about it."""
    return str(Locale.parse(code).english_name)


@cache
def language_reading(languages: tuple[str, ...]) -> type[OneOf]:
    """The one-token reading of which of ``languages`` a message is in."""

    class LanguageReading(OneOf):
        """Which of the catalog's languages the customer writes in."""

        options = {code: language_name(code) for code in languages}

    return LanguageReading

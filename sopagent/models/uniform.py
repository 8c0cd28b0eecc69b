"""The model that reads nothing: ``--model uniform``, every option equally likely, every fact unread.

A policy run on it shows what its procedure does alone; ``sopagent eval star --model uniform`` is the
no-model baseline of the STAR benchmark.
"""

from __future__ import annotations

from sopagent.models.base import CallStats, ChatPrompt, Choice, Extraction, M


class UniformModel:
    """Every option equally likely (option A is taken), every fact left at its default."""

    name = "uniform"

    def extract(self, prompt: ChatPrompt, schema: type[M]) -> Extraction:
        """Defaults of the schema (every field empty)."""
        return Extraction(facts=schema(), raw="{}", stats=CallStats())

    def choose(self, prompt: ChatPrompt, n_options: int) -> Choice:
        """Option A, with equal probabilities for all."""
        return Choice(index=0, probabilities=[1.0 / n_options] * n_options, raw="A", stats=CallStats())

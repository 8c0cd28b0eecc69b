"""A scripted test model: answers are given in advance, constraints are still checked.

Use it to test policies and the engine without loading a real model::

    model = ScriptedModel(facts=[{"intent": "lost_card"}], choices=[1])
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable

from pydantic import ValidationError

from sopagent.errors import ConstraintViolationError, ModelError, ModelSpecError
from sopagent.models.base import PROBABILITIES_KEY, CallStats, ChatPrompt, Choice, Extraction, M


class ScriptedModel:
    """Returns scripted facts and choices in order; an exhausted script is a ModelError.

    A facts entry may give each field's probability under ``"_probabilities"`` (field -> probability),
    as a backend that measures them would. A scripted choice may be an int (the option index) or a list
    of probabilities (the highest
    is picked). A scripted facts entry that does not validate is a ModelError, exactly as a
    malformed answer from a real model would be. An entry that is an Exception is raised.
    """

    name = "scripted"

    def __init__(self, facts: Iterable[Any] = (), choices: Iterable[Any] = ()) -> None:
        self.facts: deque[Any] = deque(facts)
        self.choices: deque[Any] = deque(choices)
        self.prompts: list[ChatPrompt] = []
        self._given = {"facts": len(self.facts), "choices": len(self.choices)}
        for number, entry in enumerate(self.facts, start=1):
            if not isinstance(entry, (dict, Exception)):
                raise ModelSpecError(f"scripted facts #{number} is {entry!r}: give a dict of the step's facts "
                                     '(e.g. {"intent": "fee_refund"}) or an exception to raise')
        for number, entry in enumerate(self.choices, start=1):
            probabilities = isinstance(entry, list) and entry and all(
                isinstance(p, (int, float)) and not isinstance(p, bool) for p in entry)
            if not (isinstance(entry, int) and not isinstance(entry, bool)) and not probabilities \
                    and not isinstance(entry, Exception):
                raise ModelSpecError(f"scripted choice #{number} is {entry!r}: give an option index (0, 1, ...) "
                                     "or a list of probabilities, one per option ([0.2, 0.8])")

    def extract(self, prompt: ChatPrompt, schema: type[M]) -> Extraction:
        self.prompts.append(prompt)
        if not self.facts:
            raise ModelError(f"the scripted model's facts ran out: a step asked for facts after all "
                             f"{self._given['facts']} entries were used; add an entry for it", retryable=False)
        entry = self.facts.popleft()
        if isinstance(entry, Exception):
            raise entry
        entry = dict(entry)
        probabilities = entry.pop(PROBABILITIES_KEY, {})
        try:
            facts = schema.model_validate(entry)
        except ValidationError as exc:
            raise ModelError(f"facts did not validate against {schema.__name__}: {exc.errors()[0]['msg']}") from exc
        return Extraction(facts=facts, raw=str(entry), stats=CallStats(), probabilities=dict(probabilities))

    def choose(self, prompt: ChatPrompt, n_options: int) -> Choice:
        self.prompts.append(prompt)
        if not self.choices:
            raise ModelError(f"the scripted model's choices ran out: the model was asked to choose after all "
                             f"{self._given['choices']} entries were used; add an entry for it", retryable=False)
        entry = self.choices.popleft()
        if isinstance(entry, Exception):
            raise entry
        if isinstance(entry, int):
            probabilities = [1.0 if i == entry else 0.0 for i in range(n_options)]
            index = entry
        else:
            probabilities = [float(p) for p in entry]
            index = max(range(len(probabilities)), key=probabilities.__getitem__)
        if not 0 <= index < n_options or len(probabilities) != n_options:
            raise ConstraintViolationError(f"scripted choice {entry!r} is outside the {n_options} options")
        return Choice(index=index, probabilities=probabilities, raw=str(index), stats=CallStats())

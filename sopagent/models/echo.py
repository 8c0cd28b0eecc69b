"""A test model for services: the customer's message itself carries the scripted answer.

Unlike :class:`~sopagent.models.scripted.ScriptedModel` (one script consumed in order), the echo
model answers any number of concurrent conversations, so it drives HTTP servers, load tests and
front-end development without a real model. A customer message that is a JSON object is read as:

* fields of the step's facts schema -> the extracted facts (other keys are ignored);
* ``"_probabilities": {"field": p}`` -> each field's probability, as a measuring backend gives it;
* ``"_choose": N`` -> the option index picked when the policy leaves a choice (default 0);
* ``"_sleep": S`` -> seconds the call takes (added to the model's fixed ``delay_s``);
* ``"_fail": "why"`` -> the call raises :class:`~sopagent.errors.ModelError`.

Any other message yields an empty facts object, which a schema with required fields refuses
(a ModelError, as a malformed answer from a real model would be).
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError

from sopagent.errors import ConstraintViolationError, ModelError
from sopagent.models.base import PROBABILITIES_KEY, CallStats, ChatPrompt, Choice, Extraction, M

LATEST = "Customer (latest message): "


class EchoModel:
    """Reads scripted facts and choices from the customer's latest message (see the module doc)."""

    name = "echo"

    def __init__(self, delay_s: float = 0.0) -> None:
        """``delay_s``: a fixed artificial duration of every call (to stand in for a real model)."""
        self.delay_s = delay_s

    def extract(self, prompt: ChatPrompt, schema: type[M]) -> Extraction:
        """Facts from the message's JSON keys that the schema declares."""
        script = self._script(prompt)
        facts = {k: v for k, v in script.items() if k in schema.model_fields}
        try:
            value = schema.model_validate(facts)
        except ValidationError as exc:
            raise ModelError(f"facts did not validate against {schema.__name__}: {exc.errors()[0]['msg']}") from exc
        given = script.get(PROBABILITIES_KEY)
        probabilities: dict[str, Any] = given if isinstance(given, dict) else {}
        return Extraction(facts=value, raw=json.dumps(facts), stats=CallStats(ms=self.delay_s * 1000),
                          probabilities={k: float(v) for k, v in probabilities.items()})

    def choose(self, prompt: ChatPrompt, n_options: int) -> Choice:
        """The option named by ``_choose`` (default 0), probability 1."""
        script = self._script(prompt)
        index = script.get("_choose", 0)
        if not isinstance(index, int) or not 0 <= index < n_options:
            raise ConstraintViolationError(f"echo choice {index!r} is outside the {n_options} options")
        probabilities = [1.0 if i == index else 0.0 for i in range(n_options)]
        return Choice(index=index, probabilities=probabilities, raw=str(index), stats=CallStats(ms=self.delay_s * 1000))

    def _script(self, prompt: ChatPrompt) -> dict[str, Any]:
        latest = prompt.context.rsplit(LATEST, 1)[-1]
        try:
            script = json.loads(latest)
        except ValueError:
            script = {}
        if not isinstance(script, dict):
            script = {}
        pause = self.delay_s + float(script.get("_sleep", 0) or 0)
        if pause > 0:
            time.sleep(pause)
        if "_fail" in script:
            raise ModelError(f"echo model told to fail: {script['_fail']}", retryable=True)
        return script

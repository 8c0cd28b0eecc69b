"""The composition root: the store, the model and the agent every command runs, built from :class:`Settings`.

``sopagent chat``, ``serve``, ``test``, the console's "try a policy" and ``eval star`` all build their
agent here, so a setting (``[agent]`` in ``sopagent.toml``, ``$SOPAGENT_DB``...) means the same thing
to each of them.
"""

from __future__ import annotations

from typing import Any, Callable

from sopagent.engine import Agent
from sopagent.models import load_model
from sopagent.models.base import DecisionModel, WarmableModel
from sopagent.policy import Policy
from sopagent.settings import Settings
from sopagent.store import Store


def open_store(settings: Settings) -> Store:
    """The audit store the settings name."""
    return Store(settings.database_url())


def open_model(settings: Settings, *, progress: Callable[[int, int], None] | None = None,
               threads: int | None = None, self_test: bool = True) -> DecisionModel:
    """The model the settings name, self-tested (see :func:`sopagent.models.load_model`)."""
    return load_model(settings=settings, progress=progress, threads=threads, self_test=self_test)


def warm_for(model: DecisionModel, policy: Policy) -> None:
    """Compile the constraints of the policy's step readings now, where the backend can."""
    if isinstance(model, WarmableModel):
        model.warm([step.facts for step in policy.steps.values() if step.facts.model_fields])


def build_agent(policy: Policy, settings: Settings, *, model: DecisionModel, store: Store, tools: Any = None,
                **options: Any) -> Agent:
    """The agent for ``policy`` on ``model`` and ``store``, with the settings' ``[agent]`` values."""
    return Agent(policy, model, store, tools=tools,
                 confidence_threshold=settings.agent.confidence_threshold,
                 approve_when_confidence_unknown=settings.agent.approve_when_confidence_unknown, **options)

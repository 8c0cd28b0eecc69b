"""sopagent: a constrained-response SOP agent for regulated customer support.

Policies are Python, replies come only from approved catalogs, the model only chooses, and every
decision is audited.
"""

from sopagent.catalog import Catalog, Response, load_catalog
from sopagent.effects import Effect, IdempotentBackend, action
from sopagent.engine import Agent, OptionView, TurnResult
from sopagent.errors import (
                             AuthoringError,
                             CatalogError,
                             ConstraintNotEnforcedError,
                             ConversationError,
                             ModelError,
                             PolicyError,
                             RunError,
                             SopAgentError,
                             StoreError,
)
from sopagent.kernel import ChosenBy, Status
from sopagent.models import ScriptedModel, load_model
from sopagent.policy import (
                             END,
                             ClearYes,
                             Confirmation,
                             Facts,
                             NoFacts,
                             OneOf,
                             OneToken,
                             Option,
                             Policy,
                             Turn,
                             load_policy,
                             say,
)
from sopagent.store import Store

__all__ = [
    "Agent", "AuthoringError", "Catalog", "CatalogError", "ChosenBy", "ClearYes", "Confirmation",
    "ConstraintNotEnforcedError", "ConversationError", "END", "Effect", "Facts", "IdempotentBackend", "ModelError",
    "NoFacts", "OneOf", "OneToken", "Option",
    "OptionView", "Policy", "PolicyError", "Response", "RunError", "ScriptedModel", "SopAgentError", "Status",
    "Store", "StoreError", "Turn", "TurnResult", "action", "load_catalog", "load_model", "load_policy", "say",
]
__version__ = "0.1.0"

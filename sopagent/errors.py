"""One error hierarchy for sopagent.

Errors are split the way a user needs them split:

* :class:`AuthoringError` -- *you*, the policy or catalog author, made a mistake. The message
  names the file, the line where known, and the fix. Retrying never helps.
* :class:`RunError` -- something failed while running (the model, the store, a conversation in
  the wrong state). ``retryable`` says whether trying the same thing again can help.
"""

from __future__ import annotations

import difflib


class SopAgentError(Exception):
    """Base class of every error sopagent raises on purpose."""

    retryable: bool = False


class AuthoringError(SopAgentError):
    """A mistake in a policy, catalog or test file: fix the file, retrying will not help."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 fix: str | None = None) -> None:
        self.path = path
        self.line = line
        self.fix = fix
        self.detail = message
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        text = f"{where}{message}"
        if fix:
            text += f"\n  fix: {fix}"
        super().__init__(text)


class CatalogError(AuthoringError):
    """A response catalog is invalid (unknown key, undeclared slot, bad type, duplicate id...)."""


class PolicyError(AuthoringError):
    """A policy module is invalid, or a step returned something the policy does not allow."""


class ConversationTestError(AuthoringError):
    """A conversation test file is malformed."""


class RunError(SopAgentError):
    """Something failed while running; ``retryable`` says whether a retry can help, ``fix`` what to do
    (shown on its own line, as for authoring errors)."""

    def __init__(self, message: str, *, retryable: bool = False, fix: str | None = None) -> None:
        self.retryable = retryable
        self.fix = fix
        self.detail = message
        super().__init__(f"{message}\n  fix: {fix}" if fix else message)


class ModelError(RunError):
    """The model backend failed (load, timeout, malformed answer).

    The message never quotes what the model wrote (it may copy the customer's words); ``model_output``
    holds it, and the engine records it with the decision's personal content, where erasure clears it.
    """

    def __init__(self, message: str, *, retryable: bool = False, model_output: str | None = None,
                 fix: str | None = None) -> None:
        self.model_output = model_output
        super().__init__(message, retryable=retryable, fix=fix)


class ModelUnavailableError(ModelError):
    """The model file or runtime is missing; the message says which command installs it."""


class ConstraintNotEnforcedError(ModelError):
    """The start-up self-test showed that constrained decoding is not being applied.

    Outlines can fail open (for example when numba is missing under llama.cpp): the model would
    then be free to write anything. sopagent refuses to run rather than run unconstrained.
    """


class ConstraintViolationError(ModelError):
    """A decoded answer was outside the allowed set; it was refused and recorded."""


class StoreError(RunError):
    """The audit store could not be read or written; no reply was given."""


class CapacityError(RunError):
    """The service is saturated: a turn waited too long for its turn; nothing was recorded or sent."""


class ConversationError(RunError):
    """The conversation is unknown, closed or in a state that does not accept this action."""


class AnchorError(RunError):
    """A signing key or checkpoint file of the anchored audit chain cannot be used; the message says how
    to fix it."""


class ApiKeyError(RunError):
    """An API key is missing, unknown, revoked, or of a scope that may not do this."""


class EvalDataError(AuthoringError):
    """An evaluation data set (e.g. STAR) is missing, misplaced or malformed."""


class BackendError(ModelError):
    """A model backend (hosted API, model server, local runtime) failed to answer usefully.

    Timeouts, rate limits, server errors, refused connections and malformed answers all become
    this one type. ``retryable`` says whether the same request can succeed later (the backend
    client has already retried with backoff by then); the engine answers with the policy's
    fallback reply and escalates either way.
    """


class ModelSpecError(ModelError):
    """A model spec (``--model``, ``$SOPAGENT_MODEL`` or ``sopagent.toml``) cannot be understood."""


def did_you_mean(name: str, known: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``known`` to ``name``, or nothing when none is close."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

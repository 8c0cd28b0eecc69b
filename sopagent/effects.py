"""Deeds under the same discipline as words: backend actions declared by options, never called by steps.

A backend method that changes a customer's account is marked with :func:`action`::

    class Bank:
        @action(irreversible=True)
        def block_card(self, customer_id: str, idempotency_key: str = "") -> dt.date: ...

A step does not call it. It *plans* it on the option that would do it, and may bind the reply's slots
to the action's result::

    block = turn.tools.block_card.plan(customer.id)
    return [say("card_blocked", next="anything_else", do=[block], delivery_date=block.result)]

The engine commits the decision together with the chosen option's planned effects (an outbox), then
runs them once each, after the commit and after any operator approval, passing an idempotency key
derived from the decision; see :mod:`sopagent.outbox`. Calling an action directly from policy code
raises :class:`~sopagent.errors.PolicyError` naming the caller's file and line.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import sys
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, TypeVar, get_type_hints

from pydantic import TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from sopagent.errors import PolicyError

IDEMPOTENCY_PARAMETER = "idempotency_key"
"""An action that declares this parameter receives the effect's idempotency key."""

RESULT_MARK = "$result_of"
"""How a slot bound to an effect's result is recorded: ``{"$result_of": index, "field": name}``."""

_ADAPTERS: dict[Callable[..., Any], dict[str, TypeAdapter[Any]]] = {}
"""Validators of each action's parameters, by function (built on first use)."""

_executing: ContextVar[bool] = ContextVar("sopagent_executing_effect", default=False)

Fn = TypeVar("Fn", bound=Callable[..., Any])


@dataclass(frozen=True)
class ActionSpec:
    """What :func:`action` records about a backend method."""

    name: str
    irreversible: bool
    function: Callable[..., Any]

    def parameters(self) -> list[inspect.Parameter]:
        """The parameters a plan binds (``self`` and the idempotency key left out)."""
        params = list(inspect.signature(self.function).parameters.values())[1:]
        return [p for p in params if p.name != IDEMPOTENCY_PARAMETER]

    def adapters(self) -> dict[str, TypeAdapter[Any]]:
        """A validator per hinted parameter, built once on first use (so classes defined after the
        backend resolve; building one costs about a millisecond)."""
        cached = _ADAPTERS.get(self.function)
        if cached is None:
            try:
                hints = get_type_hints(self.function)
            except Exception:  # an unresolvable hint: arguments are then taken as given
                hints = {}
            hints.pop("return", None)
            cached = _ADAPTERS[self.function] = {name: TypeAdapter(hint) for name, hint in hints.items()}
        return cached

    def bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments by name, validated against the method's hints and made JSON-ready."""
        try:
            bound = inspect.signature(self.function).bind(None, *args, **kwargs)
        except TypeError as exc:
            raise PolicyError(f"action {self.name}: {exc}", path=_caller(),
                              fix=f"pass {self.name}.plan(...) the arguments of {self.name}") from None
        if IDEMPOTENCY_PARAMETER in bound.arguments:
            raise PolicyError(f"action {self.name}: {IDEMPOTENCY_PARAMETER} was given by the policy", path=_caller(),
                              fix="leave it out: the engine passes each effect's own idempotency key when it runs")
        bound.apply_defaults()
        arguments = {name: value for name, value in list(bound.arguments.items())[1:]
                     if name != IDEMPOTENCY_PARAMETER}
        adapters = self.adapters()
        for name, value in arguments.items():
            if name in adapters:
                try:
                    adapters[name].validate_python(value)
                except ValidationError as exc:
                    message = exc.errors()[0]["msg"]
                    raise PolicyError(f"action {self.name}, argument {name}={value!r}: {message}", path=_caller(),
                                      fix=f"pass a value of the type {name} is declared with") from None
        return to_jsonable_python(arguments)

    def call(self, target: Any, arguments: Mapping[str, Any], idempotency_key: str) -> Any:
        """Run the method on ``target`` with JSON arguments coerced back to their types."""
        adapters = self.adapters()
        values = {name: (adapters[name].validate_json(json.dumps(value)) if name in adapters else value)
                  for name, value in arguments.items()}
        if IDEMPOTENCY_PARAMETER in inspect.signature(self.function).parameters:
            values[IDEMPOTENCY_PARAMETER] = idempotency_key
        token = _executing.set(True)
        try:
            return self.function(target, **values)
        finally:
            _executing.reset(token)


@dataclass(frozen=True)
class EffectResult:
    """A slot value that is an effect's result (or one field of it), known only once the effect ran."""

    effect: "Effect"
    field: str | None = None

    def __getattr__(self, name: str) -> "EffectResult":
        if name.startswith("__"):
            raise AttributeError(name)
        return EffectResult(self.effect, name)


@dataclass(frozen=True)
class Effect:
    """One planned call of an :func:`action`: its name and its arguments, bound and typed."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    irreversible: bool = False

    @property
    def result(self) -> EffectResult:
        """What the action returns, for a slot of the reply (``delivery_date=block.result``)."""
        return EffectResult(self)

    def describe(self) -> str:
        """``block_card(customer_id='C-1001')``: how people see the effect."""
        return describe(self.name, self.arguments)

    def to_json(self) -> dict[str, Any]:
        """How the effect is recorded with its option."""
        return {"name": self.name, "arguments": dict(self.arguments), "irreversible": self.irreversible}


def describe(name: str, arguments: Mapping[str, Any]) -> str:
    """An effect as people read it: ``name(arg=value, ...)``, arguments by name in alphabetical order
    (the order they are recorded in)."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(arguments.items()))})"


class _Action:
    """The descriptor :func:`action` puts on a backend class."""

    def __init__(self, spec: ActionSpec) -> None:
        self.spec = spec
        functools.update_wrapper(self, spec.function)  # type: ignore[arg-type]

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return BoundAction(self.spec, instance)


class BoundAction:
    """An action on a backend object: ``.plan(...)`` declares it; calling it runs it (effect runner only)."""

    def __init__(self, spec: ActionSpec, target: Any) -> None:
        self.spec = spec
        self.target = target
        self.__name__ = spec.name
        self.__doc__ = spec.function.__doc__

    def plan(self, *args: Any, **kwargs: Any) -> Effect:
        """Declare this action for an option (``say(..., do=[...])``); nothing runs now."""
        return Effect(self.spec.name, self.spec.bind(args, kwargs), self.spec.irreversible)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not _executing.get():
            raise PolicyError(
                f"{self.spec.name} changes the customer's account and was called directly", path=_caller(),
                fix=f"declare it on the option instead: effect = turn.tools.{self.spec.name}.plan(...); "
                    f"say(..., do=[effect], slot=effect.result); it runs once, after the decision is recorded "
                    f"and approved")
        return self.spec.function(self.target, *args, **kwargs)


def action(function: Fn | None = None, *, irreversible: bool = False) -> Any:
    """Mark a backend method as an action: it changes a customer's account.

    Args:
        irreversible: the action cannot be undone (a card block, a cancellation): the engine plans it
            only on a reading whose probability reaches the policy's ``action_confidence``.
    """

    def wrap(fn: Callable[..., Any]) -> _Action:
        return _Action(ActionSpec(fn.__name__, irreversible, fn))

    return wrap(function) if function is not None else wrap


def actions_of(tools: Any) -> dict[str, ActionSpec]:
    """The actions a tools object offers, by name."""
    if tools is None:
        return {}
    found: dict[str, ActionSpec] = {}
    for klass in type(tools).__mro__:
        for name, value in vars(klass).items():
            if isinstance(value, _Action) and name not in found:
                found[name] = value.spec
    return found


@contextlib.contextmanager
def executing() -> Iterator[None]:
    """Inside, actions may be called directly (the effect runner's own context)."""
    token = _executing.set(True)
    try:
        yield
    finally:
        _executing.reset(token)


def shown_slots(slots: Mapping[str, Any], effects: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Recorded slot values as people read them: a slot an action fills shows ``<result of NAME>``."""
    def shown(value: Any) -> Any:
        if isinstance(value, Mapping) and RESULT_MARK in value:
            index = value[RESULT_MARK]
            name = effects[index]["name"] if isinstance(index, int) and index < len(effects) else "an action"
            return f"<result of {name}" + (f".{value['field']}" if value.get("field") else "") + ">"
        return value

    return {name: shown(value) for name, value in slots.items()}


def result_value(result: Any, field_name: str | None) -> Any:
    """The recorded (JSON) result of an effect, or one field of it."""
    if field_name is None:
        return result
    if isinstance(result, Mapping) and field_name in result:
        return result[field_name]
    raise PolicyError(f"the effect's result has no field {field_name!r} (result: {result!r})",
                      fix="bind the slot to effect.result or to a field the action returns")


def _caller() -> str | None:
    """file:line of the first frame outside sopagent's own effect code (the policy author's line)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename == __file__:
        frame = frame.f_back  # type: ignore[assignment]
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else None


R = TypeVar("R")


class IdempotentBackend:
    """A mixin for backends kept in memory (demos, tests): :meth:`once` returns the first result of a
    key again instead of repeating the change, as a real backend API does with an idempotency key."""

    def once(self, idempotency_key: str, change: Callable[[], R]) -> R:
        """Run ``change`` the first time ``idempotency_key`` is seen; return its remembered result after."""
        done: dict[str, Any] = self.__dict__.setdefault("_idempotent_results", {})
        if idempotency_key and idempotency_key in done:
            return done[idempotency_key]
        result = change()
        if idempotency_key:
            done[idempotency_key] = result
        return result

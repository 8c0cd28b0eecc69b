"""Grounding: a fact read from the customer's message must be supported by the message's own words.

A small model fills optional fields with plausible values the customer never gave (card digits made
up from a date, an order id from an earlier turn, a year it guessed). After every extraction the
engine checks each copied value against the customer's latest message and treats what it cannot
find as *not given* (``None``), so the procedure asks instead of acting on a guess:

* text (ids, digits, names, e-mail addresses): its letters and digits must occur in the message
  (a number of digits only as a whole number, so ``1435`` is not found in "14 March 1985");
* numbers and amounts: the same number must be written in the message;
* dates: the day and the month must be written (the month as a number or a name in one of
  :data:`MONTH_LANGUAGES`), and the year
  too when the message writes any year; a numeric date whose day and month could be swapped
  (``03/04/1990``) is *ambiguous* and not taken either way.

Enum (``Literal``) values are chosen, not copied, and are not checked against the words; a required
field is never dropped. A field opts out with ``Field(..., json_schema_extra=NOT_GROUNDED)`` when its
value is rightly derived rather than copied.

Every value is also weighed by the probability the model decoded it with (its choice between null
and a value included, :attr:`sopagent.models.base.Extraction.probabilities`): an optional value, an
enum's included, read with less than the policy's ``fact_confidence`` is *unsure* and not taken
either (:func:`settle_facts`).
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, get_args, get_origin

from babel.dates import get_month_names
from pydantic import BaseModel

from sopagent.policy import FOLLOW_UP_READINGS, OneOf

NOT_GROUNDED = {"grounded": False}
"""``json_schema_extra`` of a field whose value is derived, not copied from the message."""

UNGROUNDED = "ungrounded"
"""Key of a decision's facts that lists the values dropped as not given: field -> {value, why}."""

FIELD_PROBABILITIES = "field_probabilities"
"""Key of a decision's facts that holds each field value's probability as the model decoded it."""

MODEL_OUTPUT = "model_output"
"""Key of a decision's facts that holds what the model wrote when its answer was unusable."""

Why = Literal["not in the message", "ambiguous", "unsure", "not said", "invalid"]

MONTH_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt")
"""Languages whose month names (Babel's CLDR data, full and abbreviated) count as a written month."""


def _month_names() -> dict[str, int]:
    names: dict[str, int] = {"sept": 9}
    for language in MONTH_LANGUAGES:
        for width in ("wide", "abbreviated"):
            for context in ("format", "stand-alone"):
                for number, name in get_month_names(width, context, locale=language).items():
                    names.setdefault(name.casefold().rstrip("."), number)
    return names


_MONTHS = _month_names()
_NUMERIC_DATE = re.compile(r"(?<!\d)(\d{1,2})[/.\-](\d{1,2})(?:[/.\-](\d{2}|\d{4}))?(?![\d/.\-]\d)(?!\d)")
"""A numeric date: day and month in either order, the year optional (``03/04/1990``, ``12/11``)."""


def ground(facts: BaseModel, message: str) -> tuple[BaseModel, dict[str, dict[str, Any]]]:
    """``facts`` with every optional copied value the message does not support set to None, and what
    was dropped (field -> {"value", "why"})."""
    dropped: dict[str, dict[str, Any]] = {}
    if isinstance(facts, OneOf):  # one label chosen among described options: nothing is copied
        return facts, dropped
    updates: dict[str, Any] = {}
    for name, info in type(facts).model_fields.items():
        value = getattr(facts, name)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if value is None or extra.get("grounded") is False or info.is_required() or _is_enum(info.annotation):
            continue
        why = why_not_grounded(value, message)
        if why is not None:
            dropped[name] = {"value": value.isoformat() if isinstance(value, dt.date) else value, "why": why}
            updates[name] = None
    return (facts.model_copy(update=updates) if updates else facts), dropped


def settle_facts(facts: BaseModel, message: str, probabilities: dict[str, float], at_least: float,
                 invalid: dict[str, Any] | None = None) -> tuple[BaseModel, dict[str, dict[str, Any]]]:
    """``facts`` with what the customer did not clearly give set back to its default, and why each was
    dropped: values the message does not support (:func:`ground`), optional values decoded with a
    probability below ``at_least`` ("unsure", the probability recorded), and values that were not valid
    for their field (``invalid``, already left out of ``facts`` by the backend)."""
    facts, dropped = ground(facts, message)
    dropped.update({name: {"value": value, "why": "invalid"} for name, value in (invalid or {}).items()})
    if isinstance(facts, OneOf) or not probabilities:
        return facts, dropped
    updates: dict[str, Any] = {}
    for name, info in type(facts).model_fields.items():
        value, probability = getattr(facts, name), probabilities.get(name)
        if probability is None or info.is_required() or value is None or value == info.default:
            continue
        if probability < at_least:
            dropped[name] = {"value": value.isoformat() if isinstance(value, dt.date) else value, "why": "unsure",
                             "probability": probability}
            updates[name] = info.default
    return (facts.model_copy(update=updates) if updates else facts), dropped


def facts_lines(recorded: dict[str, Any]) -> list[str]:
    """A decision's recorded facts for people: the values taken (with the probability each was read
    with, where known), then one line per value not taken and why. Follow-up readings are left out."""
    facts = {k: v for k, v in recorded.items()
             if k not in (FOLLOW_UP_READINGS, UNGROUNDED, FIELD_PROBABILITIES, MODEL_OUTPUT)}
    ungrounded: dict[str, dict[str, Any]] = recorded.get(UNGROUNDED) or {}
    probabilities: dict[str, float] = recorded.get(FIELD_PROBABILITIES) or {}
    taken = ", ".join(f"{name}={value!r}" + (f" (p {probabilities[name]:.2f})" if name in probabilities
                                              and name not in ungrounded else "") for name, value in facts.items())
    lines = [taken or "none needed at this step"]
    if recorded.get(MODEL_OUTPUT) is not None:
        lines.append(f"the model's unusable answer: {recorded[MODEL_OUTPUT]!r}")
    for name, dropped in ungrounded.items():
        why = dropped.get("why")
        if why == "unsure":
            why = f"unsure: p {dropped.get('probability', 0.0):.2f}, below the policy's fact_confidence"
        lines.append(f"not taken: {name}={dropped.get('value')!r} ({why}): treated as not given")
    return lines


def why_not_grounded(value: Any, message: str) -> Why | None:
    """None when ``message`` supports ``value``; else why not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, dt.date):
        return _date_support(value, message)
    if isinstance(value, (int, float, Decimal)):
        return None if _number_in(value, message) else "not in the message"
    if isinstance(value, str):
        return None if _text_in(value, message) else "not in the message"
    return None


def _text_in(value: str, message: str) -> bool:
    if value.isdigit():  # a number of digits: only as a whole number of the message
        return re.search(rf"(?<!\d){re.escape(value)}(?!\d)", message) is not None
    wanted = _alnum(value)
    return bool(wanted) and wanted in _alnum(message)


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def _numbers(message: str) -> list[Decimal]:
    found = []
    for raw in re.findall(r"\d+(?:[.,]\d+)*", message):
        text = raw
        if re.fullmatch(r"\d{1,3}(,\d{3})+(\.\d+)?", text):  # 1,234.56
            text = text.replace(",", "")
        elif re.fullmatch(r"\d{1,3}(\.\d{3})+(,\d+)?", text):  # 1.234,56
            text = text.replace(".", "").replace(",", ".")
        else:
            text = text.replace(",", ".")
        try:
            found.append(Decimal(text))
        except InvalidOperation:
            continue
    return found


def _number_in(value: int | float | Decimal, message: str) -> bool:
    wanted = Decimal(str(value))
    return any(abs(number - wanted) < Decimal("0.005") for number in _numbers(message))


def _date_support(value: dt.date, message: str) -> Why | None:
    for day, month, year in _NUMERIC_DATE.findall(message):
        a, b = int(day), int(month)
        if (not year or _same_year(value.year, year)) and {a, b} == {value.day, value.month} and a != b \
                and a <= 12 and b <= 12:
            return "ambiguous"  # 03/04/1990: the third of April or the fourth of March
    numbers = [int(n) for n in re.findall(r"\d+", message)]
    words = re.findall(r"[^\W\d_]+", message.casefold())
    month_written = value.month in numbers or any(_MONTHS.get(word) == value.month for word in words)
    day_written = value.day in numbers
    years = [n for n in re.findall(r"\d+", message) if len(n) == 4 or re.search(rf"'{n}\b", message)]
    year_written = not years or any(_same_year(value.year, n) for n in years) or any(
        _same_year(value.year, n) for n in re.findall(r"\d+", message) if len(n) == 2)
    return None if month_written and day_written and year_written else "not in the message"


def _same_year(year: int, written: str) -> bool:
    return int(written) == year if len(written) == 4 else int(written) == year % 100


def _is_enum(annotation: Any) -> bool:
    """A Literal (or an optional Literal): its values are chosen, not copied."""
    if get_origin(annotation) is Literal:
        return True
    return any(_is_enum(arg) for arg in get_args(annotation) if arg is not type(None))

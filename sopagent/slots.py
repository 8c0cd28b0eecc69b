"""Typed slots: the only values that may ever be inserted into catalog text.

A slot is declared in the catalog (``type: money``, ``type: date``...). Policy code binds a value
to it; the value is validated against the declaration and formatted by the declaration, so the
only variable text a customer can see is a validated money amount, date, enum value, integer or
pattern-checked string.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal, Union

from babel.dates import format_date
from babel.numbers import format_currency
from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_LANGUAGE = "en"
"""The language of a catalog that declares none."""


class _SlotBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    """What the value means, for reviewers."""

    def coerce(self, value: Any) -> Any:
        """Validate ``value`` against this slot and return it in canonical form, or raise ValueError."""
        raise NotImplementedError

    def format(self, value: Any, language: str | None = None) -> str:
        """Render an already coerced value as customer-facing text in ``language`` (None: the catalog's
        first language, as the catalog writes it)."""
        return str(value)

    def missing_labels(self, language: str) -> list[str]:
        """The values this slot cannot name in ``language`` (only enum slots name values in words)."""
        return []


class MoneySlot(_SlotBase):
    """An amount of money in one currency, written as the language writes money (Babel's CLDR data:
    ``€1,234.50`` in English, ``1.234,50 €`` in German)."""

    type: Literal["money"]
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    """ISO 4217 code, e.g. EUR."""

    def coerce(self, value: Any) -> Decimal:
        if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
            raise ValueError(f"expected an amount of money, got {type(value).__name__}")
        try:
            amount = Decimal(str(value))
        except InvalidOperation as exc:
            raise ValueError(f"{value!r} is not an amount of money") from exc
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"{value!r} is not a non-negative amount")
        return amount.quantize(Decimal("0.01"))

    def format(self, value: Decimal, language: str | None = None) -> str:
        return str(format_currency(value, self.currency, locale=language or DEFAULT_LANGUAGE))


class DateSlot(_SlotBase):
    """A calendar date: in the catalog's first language with ``format`` (strftime), in the others as the
    language writes a date (Babel's ``long`` form, ``14. März 1985``, or a CLDR pattern in ``formats``)."""

    type: Literal["date"]
    format_: str = Field("%d %B %Y", alias="format")
    """strftime format used in the reply text of the catalog's first language."""
    formats: dict[str, str] = Field(default_factory=dict)
    """Per other language, a CLDR date pattern (``d. MMMM y``) or ``short``/``medium``/``long``/``full``."""

    def coerce(self, value: Any) -> dt.date:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not an ISO date (YYYY-MM-DD)") from exc
        raise ValueError(f"expected a date, got {type(value).__name__}")

    def format(self, value: dt.date, language: str | None = None) -> str:
        if language is None:
            return value.strftime(self.format_)
        return str(format_date(value, self.formats.get(language, "long"), locale=language))


class EnumSlot(_SlotBase):
    """One value out of a fixed list written in the catalog."""

    type: Literal["enum"]
    values: list[str] = Field(min_length=1)
    labels: dict[str, dict[str, str]] = Field(default_factory=dict)
    """Per other language, how each value is written in it (``de: {late payment: Mahngebühr}``)."""

    def coerce(self, value: Any) -> str:
        if value not in self.values:
            raise ValueError(f"{value!r} is not one of {self.values}")
        return str(value)

    def format(self, value: str, language: str | None = None) -> str:
        if language is None or language not in self.labels:
            return value
        return self.labels[language][value]

    def missing_labels(self, language: str) -> list[str]:
        written = self.labels.get(language, {})
        return [value for value in self.values if value not in written]


class IntegerSlot(_SlotBase):
    """A whole number, optionally bounded."""

    type: Literal["integer"]
    min: int | None = None
    max: int | None = None

    def coerce(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {type(value).__name__}")
        if self.min is not None and value < self.min:
            raise ValueError(f"{value} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{value} is above the maximum {self.max}")
        return value


class PatternSlot(_SlotBase):
    """A short string that must fully match ``pattern`` (an order number, a reference)."""

    type: Literal["pattern"]
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from exc
        return pattern

    def coerce(self, value: Any) -> str:
        if not isinstance(value, str) or re.fullmatch(self.pattern, value) is None:
            raise ValueError(f"{value!r} does not match the pattern {self.pattern!r}")
        return value


Slot = Annotated[
    Union[MoneySlot, DateSlot, EnumSlot, IntegerSlot, PatternSlot], Field(discriminator="type")
]
"""A slot declaration; ``type`` selects one of money, date, enum, integer, pattern."""

SLOT_TYPES = ("money", "date", "enum", "integer", "pattern")

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

from pydantic import BaseModel, ConfigDict, Field, field_validator

CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


class _SlotBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    """What the value means, for reviewers."""

    def coerce(self, value: Any) -> Any:
        """Validate ``value`` against this slot and return it in canonical form, or raise ValueError."""
        raise NotImplementedError

    def format(self, value: Any) -> str:
        """Render an already coerced value as customer-facing text."""
        return str(value)


class MoneySlot(_SlotBase):
    """An amount of money in one currency, rendered with two decimals."""

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

    def format(self, value: Decimal) -> str:
        symbol = CURRENCY_SYMBOLS.get(self.currency)
        return f"{symbol}{value:,.2f}" if symbol else f"{value:,.2f} {self.currency}"


class DateSlot(_SlotBase):
    """A calendar date, rendered with ``format`` (strftime)."""

    type: Literal["date"]
    format_: str = Field("%d %B %Y", alias="format")
    """strftime format used in the reply text."""

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

    def format(self, value: dt.date) -> str:
        return value.strftime(self.format_)


class EnumSlot(_SlotBase):
    """One value out of a fixed list written in the catalog."""

    type: Literal["enum"]
    values: list[str] = Field(min_length=1)

    def coerce(self, value: Any) -> str:
        if value not in self.values:
            raise ValueError(f"{value!r} is not one of {self.values}")
        return str(value)


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

"""Response catalogs: the only text that can ever reach a customer.

A catalog is a YAML file a compliance reviewer can read::

    catalog: card_services
    version: "2026.11"
    responses:
      - id: fee_refunded
        text: "I have refunded the {fee_type} fee of {amount}."
        description: Confirm that a fee was refunded.
        slots:
          amount: {type: money, currency: EUR}
          fee_type: {type: enum, values: [late payment, overlimit]}

A catalog can speak several languages: ``languages: [en, de]`` lists them (the first is the one
``text`` is written in), and every response then carries ``translations: {de: "..."}`` with the
same slots; enum slots say how each value is written (``labels: {de: {...}}``). Money and dates
follow each language's conventions (Babel).

Every problem (unknown key, a slot used in the text but not declared or the reverse, a bad slot
type, a duplicate id) is a :class:`~sopagent.errors.CatalogError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml
from babel import Locale, UnknownLocaleError
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from sopagent.errors import CatalogError
from sopagent.slots import DEFAULT_LANGUAGE, SLOT_TYPES, Slot

RESPONSE_ID_PATTERN = r"^[a-z][a-z0-9_]*$"


class Response(BaseModel):
    """One pre-approved reply."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=RESPONSE_ID_PATTERN)
    """Stable identifier used by policies and in the audit log."""
    text: str = Field(min_length=1)
    """The exact reply text; ``{name}`` marks a declared slot, ``{{``/``}}`` a literal brace."""
    description: str = Field(min_length=1)
    """What the reply does, written for the model that chooses between replies."""
    slots: dict[str, Slot] = Field(default_factory=dict)
    """Typed values the text contains, bound by policy code."""
    requires_approval: bool = False
    """Hold the reply until an operator approves it."""
    ends_conversation: bool = False
    """The conversation is closed after this reply."""
    handoff: bool = False
    """This reply hands the customer to a human colleague."""
    translations: dict[str, str] = Field(default_factory=dict)
    """The text in each of the catalog's other languages, with the same slots."""
    _language: str | None = PrivateAttr(None)

    def slot_names_in_text(self, text: str | None = None) -> list[str]:
        """The slot names the template text (or ``text``) uses, in order."""
        template = self.text if text is None else text
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]

    def in_language(self, language: str) -> "Response":
        """This response as sent in ``language``, one of its translations: its text in that language, its
        slots written as that language writes them."""
        localized = self.model_copy(update={"text": self.translations[language]})
        localized._language = language
        return localized

    def render(self, values: Mapping[str, Any]) -> str:
        """Fill the template with ``values``; each is validated and formatted by its slot.

        Raises ValueError naming the slot when a value is missing, extra or of the wrong type.
        """
        return self._render(values, pending=None)

    def preview(self, values: Mapping[str, Any], pending: Mapping[str, str]) -> str:
        """Render with the slots in ``pending`` (slot -> what fills it later, e.g. an effect's name)
        shown as ``<result of NAME>``; every other value is validated as by :meth:`render`."""
        return self._render(values, pending=pending)

    def _render(self, values: Mapping[str, Any], pending: Mapping[str, str] | None) -> str:
        missing = sorted(set(self.slots) - set(values))
        extra = sorted(set(values) - set(self.slots))
        if missing or extra:
            raise ValueError(
                f"response {self.id!r}: "
                + (f"missing slot values {missing}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"undeclared slot values {extra}" if extra else "")
            )
        parts: list[str] = []
        for literal, name, _, _ in string.Formatter().parse(self.text):
            parts.append(literal)
            if name is not None:
                slot = self.slots[name]
                if pending is not None and name in pending:
                    parts.append(f"<result of {pending[name]}>")
                    continue
                try:
                    coerced: Any = slot.coerce(values[name])
                    parts.append(slot.format(coerced, self._language))
                except ValueError as exc:
                    raise ValueError(f"response {self.id!r}, slot {name!r}: {exc}") from exc
        return "".join(parts)

    def coerce_values(self, values: Mapping[str, Any], pending: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Validate bound values against the slots; return them JSON-ready (for the audit log).

        Slots in ``pending`` (filled later by an effect's result) are kept as they are."""
        self._render(values, pending)
        return {name: (value if pending and name in pending else _jsonable(self.slots[name].coerce(value)))
                for name, value in values.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (int, str)):
        return value
    return str(value)


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    catalog: str = Field(pattern=RESPONSE_ID_PATTERN)
    version: str
    languages: list[str] = Field(default_factory=lambda: [DEFAULT_LANGUAGE], min_length=1)
    responses: list[Response] = Field(min_length=1)


@dataclass(frozen=True)
class Catalog:
    """A validated response catalog."""

    name: str
    version: str
    path: str
    responses: dict[str, Response]
    sha256: str
    source: str
    languages: tuple[str, ...] = (DEFAULT_LANGUAGE,)
    """The languages its replies are written in; the first is the one of ``text``."""
    language: str | None = None
    """The language this view sends in (None: the first, as written)."""
    _views: dict[str, "Catalog"] = field(default_factory=dict, compare=False, repr=False)

    def in_language(self, language: str | None) -> "Catalog":
        """The catalog as sent in ``language`` (None or the first language: this catalog as written);
        a :class:`CatalogError` for a language it does not speak."""
        if language is None or language == self.languages[0]:
            return self
        if language not in self.languages:
            raise CatalogError(f"catalog {self.name} has no replies in {language!r}; it speaks "
                               f"{', '.join(self.languages)}", path=self.path,
                               fix=f"start the conversation in one of {list(self.languages)}, or add "
                                   f"{language!r} to the catalog's `languages` with its translations")
        if language not in self._views:
            self._views[language] = Catalog(
                self.name, self.version, self.path, {k: r.in_language(language) for k, r in self.responses.items()},
                self.sha256, self.source, self.languages, language)
        return self._views[language]

    def __getitem__(self, response_id: str) -> Response:
        return self.responses[response_id]

    def __contains__(self, response_id: object) -> bool:
        return response_id in self.responses

    def handoff_responses(self) -> list[Response]:
        """Responses that hand the customer to a human."""
        return [r for r in self.responses.values() if r.handoff]


def load_catalog(path: str | Path) -> Catalog:
    """Load and validate a catalog file; raise :class:`CatalogError` with file and line on any problem."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"cannot read catalog: {exc.strerror}", path=str(path),
                           fix="check the path given in the policy's `catalog=`") from exc
    return parse_catalog(source, str(path))


def parse_catalog(source: str, path: str = "<catalog>") -> Catalog:
    """Validate catalog text (see :func:`load_catalog`)."""
    data, lines = _load_yaml_with_lines(source, path)
    try:
        parsed = _CatalogFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        raise CatalogError(_describe(err, data), path=path, line=_line_for(loc, lines),
                           fix=_fix_for(err)) from None
    _check_languages(parsed.languages, path, lines)
    responses: dict[str, Response] = {}
    for index, response in enumerate(parsed.responses):
        line = _line_for(("responses", index), lines)
        if response.id in responses:
            raise CatalogError(f"duplicate response id {response.id!r}", path=path, line=line,
                               fix="give every response a unique id")
        used = response.slot_names_in_text()
        for name in used:
            if not name.isidentifier():
                raise CatalogError(
                    f"response {response.id!r}: {{{name}}} is not a plain slot name",
                    path=path, line=_line_for(("responses", index, "text"), lines),
                    fix="use {slot_name} only; write {{ and }} for literal braces")
        undeclared = sorted(set(used) - set(response.slots))
        if undeclared:
            raise CatalogError(
                f"response {response.id!r} uses slot(s) {undeclared} in its text but does not declare them",
                path=path, line=_line_for(("responses", index, "text"), lines),
                fix=f"declare them under `slots:` with one of the types {list(SLOT_TYPES)}")
        unused = sorted(set(response.slots) - set(used))
        if unused:
            raise CatalogError(
                f"response {response.id!r} declares slot(s) {unused} that its text never uses",
                path=path, line=_line_for(("responses", index, "slots"), lines),
                fix="remove the declaration or use {name} in the text")
        _check_translations(response, index, parsed.languages, path, lines)
        responses[response.id] = response
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    return Catalog(parsed.catalog, parsed.version, path, responses, digest, source, tuple(parsed.languages))


def _check_languages(languages: list[str], path: str, lines: dict[tuple[Any, ...], int]) -> None:
    for index, language in enumerate(languages):
        where = _line_for(("languages", index), lines)
        try:
            known = Locale.parse(language)
        except (UnknownLocaleError, ValueError):
            known = None
        if known is None or str(known) != language:
            raise CatalogError(f"{language!r} is not a language code", path=path, line=where,
                               fix="write a code such as en, de, fr or pt_BR")
        if language in languages[:index]:
            raise CatalogError(f"language {language!r} is listed twice", path=path, line=where,
                               fix="list each language once")


def _check_translations(response: Response, index: int, languages: list[str], path: str,
                        lines: dict[tuple[Any, ...], int]) -> None:
    """Every other language has a text with the same slots, and every enum slot a word for each value."""
    first, others = languages[0], languages[1:]
    used = set(response.slot_names_in_text())
    for language, text in response.translations.items():
        where = _line_for(("responses", index, "translations", language), lines)
        if language not in others:
            raise CatalogError(
                f"response {response.id!r} has a {language!r} text, but the catalog's other languages are "
                f"{others or 'none'}", path=path, line=where,
                fix=(f"`text` is the {first!r} text" if language == first else
                     f"add {language!r} to `languages:` at the top, or remove this translation"))
        in_translation = set(response.slot_names_in_text(text))
        if in_translation != used:
            raise CatalogError(
                f"response {response.id!r}: its {language!r} text uses the slots {sorted(in_translation)}, its "
                f"{first!r} text {sorted(used)}", path=path, line=where,
                fix="every language's text must use the same slots, each written {slot_name}")
    for language in others:
        if language not in response.translations:
            raise CatalogError(
                f"response {response.id!r} has no {language!r} text; the catalog speaks {languages}",
                path=path, line=_line_for(("responses", index), lines),
                fix=f"add `translations: {{{language}: \"...\"}}` with the same slots as `text`")
        for name in sorted(used):
            missing = response.slots[name].missing_labels(language)
            if missing:
                raise CatalogError(
                    f"response {response.id!r}, slot {name!r}: no {language!r} word for {missing}",
                    path=path, line=_line_for(("responses", index, "slots", name), lines),
                    fix=f"add `labels: {{{language}: {{{missing[0]}: ...}}}}` to the slot, one entry per value")


# --- YAML with line numbers -------------------------------------------------------------------

def _load_yaml_with_lines(source: str, path: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """Parse YAML; return the data and a map from a key path to its 1-based line."""
    try:
        loader = yaml.SafeLoader(source)
        try:
            node = loader.get_single_node()
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise CatalogError(f"not valid YAML: {exc.problem}", path=path, line=line,
                           fix="check indentation and quoting (quote text containing ': ' or '#')") from None
    if not isinstance(data, dict):
        raise CatalogError("a catalog must be a mapping with `catalog`, `version` and `responses`",
                           path=path, line=1, fix="see catalogs/card_services.yaml for the layout")
    lines: dict[tuple[Any, ...], int] = {}
    _walk(node, (), lines, path)
    return data, lines


def _walk(node: yaml.Node, prefix: tuple[Any, ...], lines: dict[tuple[Any, ...], int], path: str) -> None:
    lines[prefix] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise CatalogError(f"duplicate key {key!r}", path=path, line=key_node.start_mark.line + 1,
                                   fix="write each key once")
            seen.add(key)
            _walk(value_node, prefix + (key,), lines, path)
            lines[prefix + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, prefix + (index,), lines, path)


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    # pydantic puts the union tag into the location (e.g. "money"); drop what is not a real key.
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())


def _describe(err: Mapping[str, Any], data: Any) -> str:
    loc = ".".join(str(part) for part in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"unknown key `{err['loc'][-1]}` at {loc}"
    if kind == "missing":
        return f"missing required key `{err['loc'][-1]}` at {loc}"
    if kind == "union_tag_invalid":
        return f"unknown slot type at {loc}: {err.get('input')!r}"
    if kind == "union_tag_not_found":
        return f"slot at {loc} has no `type`"
    return f"{loc}: {err['msg']}"


def _fix_for(err: Mapping[str, Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return ("allowed keys: catalog, version, languages, responses; per response: id, text, translations, "
                "description, slots, requires_approval, ends_conversation, handoff; per slot: type and its options")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"set `type:` to one of {list(SLOT_TYPES)}"
    if kind == "missing":
        return "add the key"
    if kind == "string_pattern_mismatch" and "id" in err["loc"]:
        return "ids are lower_snake_case: letters, digits and underscores, starting with a letter"
    return "correct the value as described"

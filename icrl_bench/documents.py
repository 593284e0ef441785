"""Typed JSON documents (a dataset's manifest, an evaluation's results): what their schemas share.

A document is read and written through its pydantic model, and the model gives back exactly the
JSON it was given or built from: the fields that were set, in the order they came in, with the
types they came in (`to_dict`). So a round trip through the model changes no byte of a file and
no hash over it (`manifest_hash`, a leaderboard entry's curves hash), whichever version of the
code wrote it: a manifest imported from an export keeps its sorted keys, a built one the
builder's order.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)


class Document(BaseModel):
    """A closed part of a document: an unknown field is a corrupt or foreign file, not an extension."""

    # ser_json_inf_nan: a number written as Infinity (Python's json does) reads back as Infinity, not null
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, ser_json_inf_nan="constants")
    _order: tuple[str, ...] = PrivateAttr(())  # the field names in the order the JSON gave them

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        document = handler(data)
        if isinstance(data, dict) and isinstance(document, Document):
            document._order = tuple(cls._field_name(key) for key in data)
        return document

    @model_serializer(mode="wrap")
    def _in_given_order(self, handler: SerializerFunctionWrapHandler) -> Any:
        out = handler(self)
        if not self._order or not isinstance(out, dict):
            return out
        rank = {name: i for i, name in enumerate(self._order)}
        return dict(sorted(out.items(), key=lambda item: rank.get(self._field_name(item[0]), len(rank))))

    @classmethod
    def _field_name(cls, key: str) -> str:
        """A JSON key as the field's name (`return` -> `returns`); an extra's key as it is."""
        for name, info in cls.model_fields.items():
            if info.alias == key:
                return name
        return key

    def to_dict(self) -> dict[str, Any]:
        """The document as JSON data: only the fields it was given (a field added to the schema later
        stays absent from an older document), in the order given, under their JSON names."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def __eq__(self, other: object) -> bool:
        """Documents are equal when their JSON data is, whatever the order of its keys."""
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # equal by content, which holds lists: not hashable


class OpenDocument(Document):
    """A part whose producer may add facts (an env's own facts, a protocol's): extras are kept, in order."""

    model_config = ConfigDict(extra="allow")


def first_problem(err: ValidationError) -> str:
    """The first of a validation error's problems as `field.path: message (N problem(s) in all)`, for one-line errors."""
    first = err.errors()[0]
    location = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{location}: {first['msg']} ({err.error_count()} problem(s) in all)"

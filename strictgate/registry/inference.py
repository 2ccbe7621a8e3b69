"""Schema on first write: a dataset definition inferred from rows, grown additively by
later rows. Pure (no Redis): :meth:`strictgate.registry.store.Registry.infer` stores what
this module computes.

Rules (README, "Tables nobody registered"):

- An inferred definition has envelope ``none`` (a row is only its columns) and says in its
  ``description`` that it was inferred.
- A column's type comes from its first non-null value: a string ``string``, a number
  (integer or decimal alike) ``number``, ``true``/``false`` ``boolean``. Every inferred
  column also accepts ``null`` (``{"type": ["number", "null"]}``): OrcaSheets rows may hold
  null in any column, and its recommended coercion turns every empty cell into one. An admin
  who wants a column never null drops ``"null"`` from its type with a ``PUT``.
- **Null so far**: a column null in every row seen is declared ``{"type": "null"}``; the
  first non-null value later types it (``{"type": ["string", "null"]}``), in a new version
  (a widening: not breaking).
- **Required**: a column present in every row of the first request is required (so a
  misspelt column name is refused as a missing field rather than quietly becoming a new
  column); one missing from some row is optional. Columns added by later requests are
  optional. Requests that race to create a table define it together: a column is required
  only if every row of each of them has it.
- **Flat** (OrcaSheets: ``flat=True``): an object or array value where the inference must
  type a column is refused (:class:`InferenceError`, code ``nested_value``, naming the row
  and the column). Where a registered (or already typed) column holds one, the validator's
  usual type error applies.
- **Nested** (``flat=False``, OneSight later): an object is a nested definition, closed,
  whose members are typed by the same rules and are all optional (a top-level field with a
  ``required`` list cannot be optional in the definition language, and members added later
  must be optional anyway); later rows add new members as a new version. An array is
  ``{"type": ["array", "null"], "items": ...}`` with its elements' merged declaration; an
  array seen only empty has items ``{"type": "null"}`` (no element seen so far), typed by
  its first element later.
- **Growth is additive only**: a later row may add columns (or members) and type a null-so-
  far column; it never changes a typed column. A value of another type is the validator's
  business ("Invalid number field: amount").
- **Only from rows that fit**: when a row does not fit the inferred (or grown) definition,
  e.g. the rows disagree on a new column's type, nothing is stored; the definition typed by
  the first values is returned as provisional, so the validator names the row at fault, and
  the first request whose rows all fit defines the table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from validator.definition import MAX_DECLARED_DEPTH

ENVELOPE = "none"
DESCRIPTION = (
    "Inferred by strictgate from the rows written while no definition existed (project "
    "setting unknown_datasets=infer)."
)
NULL_ONLY: dict[str, Any] = {"type": "null"}
MAX_FIELD_NAME = 128
MAX_FIELDS = 500
"""Top-level columns of one definition (the definition meta-schema's limit)."""
MAX_DECLARED = 2_000
"""Declared fields of one inferred definition, nested members included."""
TOP_DEPTH = 2
"""The depth ``validator.definition`` gives a top-level field (its limit is
:data:`MAX_DECLARED_DEPTH`)."""


class InferenceError(ValueError):
    """Rows a definition cannot be inferred from: the caller answers 400.

    ``code``: ``nested_value`` (an object or array in a flat row), ``invalid_field_name``
    (empty, longer than 128 characters, or starting with ``__``), ``too_many_fields``,
    ``too_deep``, ``no_fields`` (every row empty), ``invalid_dataset_id``. ``index`` is the
    row's position in the rows given (None when no one row is to blame); ``field`` the
    column's path (``a.b``, ``a[]`` for array items) or None."""

    def __init__(self, code: str, message: str, *, index: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.index = index
        self.field = field


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _kind(value: Any) -> str | None:
    """The kind of a decoded JSON value; None for null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    raise TypeError(f"not a decoded JSON value: {type(value).__name__}")


class Seen:
    """What the rows showed of one column (or member, or array's items)."""

    __slots__ = ("first", "items", "kind", "members", "present", "row")

    def __init__(self, row: int = -1) -> None:
        self.row = row
        """The first row (or row holding the object) that has this member."""
        self.kind: str | None = None
        """The kind of the first non-null value (None: null in every row so far)."""
        self.first = -1
        """The row of that first value."""
        self.present = 0
        """Rows (or objects) that have this member, null or not."""
        self.members: dict[str, Seen] = {}
        self.items: Seen | None = None
        """Of an array: its elements (None: only empty arrays so far)."""


def _path(parts: tuple[str, ...]) -> str:
    return "".join(p if i == 0 or p == "[]" else "." + p for i, p in enumerate(parts))


def _see(node: Seen, value: Any, index: int, flat: bool, parts: tuple[str, ...]) -> None:
    kind = _kind(value)
    if kind is None:
        return
    if node.kind is None:
        node.kind, node.first = kind, index
    elif node.kind != kind:
        return  # typed by its first value: the validator refuses this one
    if flat or kind not in ("object", "array"):
        return
    if len(parts) + TOP_DEPTH > MAX_DECLARED_DEPTH:
        raise InferenceError(
            "too_deep", f"Value nested deeper than {MAX_DECLARED_DEPTH - 1} levels in field:"
            f" {_clip(_path(parts))}", index=index, field=_clip(_path(parts)))
    if kind == "object":
        for name, member in value.items():
            child = node.members.get(name)
            if child is None:
                child = node.members[name] = Seen(index)
            child.present += 1
            _see(child, member, index, flat, (*parts, str(name)))
    else:
        if node.items is None:
            node.items = Seen(index)
        for element in value:
            _see(node.items, element, index, flat, (*parts, "[]"))


def observe(rows: Sequence[Any], *, flat: bool) -> Seen:
    """What ``rows`` show, as the :class:`Seen` of a row object (its ``members`` are the
    columns, in order of first appearance). Rows that are not objects are skipped (the
    validator refuses them)."""
    root = Seen()
    root.kind = "object"
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            continue
        root.present += 1
        for name, value in row.items():
            child = root.members.get(name)
            if child is None:
                child = root.members[name] = Seen(index)
            child.present += 1
            _see(child, value, index, flat, (str(name),))
    return root


class _Builder:
    """Turns :class:`Seen` nodes into declarations, counting them."""

    def __init__(self, flat: bool, declared: int) -> None:
        self.flat = flat
        self.declared = declared

    def _count(self) -> None:
        self.declared += 1
        if self.declared > MAX_DECLARED:
            raise InferenceError(
                "too_many_fields",
                f"An inferred dataset declares at most {MAX_DECLARED} fields, nested ones"
                " included")

    def declare(self, node: Seen, parts: tuple[str, ...]) -> dict[str, Any]:
        """The declaration of what ``node`` saw (nullable; null only so far: null)."""
        self._count()
        if node.kind is None:
            return dict(NULL_ONLY)
        if node.kind in ("object", "array") and self.flat:
            shown = _clip(_path(parts))
            raise InferenceError(
                "nested_value", f"Nested value in field: {shown} (rows of a dataset nobody"
                " registered are flat: strings, numbers, booleans or null; register its"
                " definition to declare objects or arrays)", index=node.first, field=shown)
        if node.kind == "object":
            return {"type": ["object", "null"], "properties": {
                name: self.declare(child, (*parts, name))
                for name, child in node.members.items()}}
        if node.kind == "array":
            items = dict(NULL_ONLY) if node.items is None else self.declare(
                node.items, (*parts, "[]"))
            return {"type": ["array", "null"], "items": items}
        return {"type": [node.kind, "null"]}

    def extend(self, decl: dict[str, Any], node: Seen, parts: tuple[str, ...]
               ) -> dict[str, Any]:
        """``decl`` grown by what ``node`` saw: typed if null so far, new members added;
        ``decl`` itself (the same object) when nothing is new."""
        if node.kind is None:
            return decl
        if decl.get("type") == "null":
            return self.declare(node, parts)
        if _base_kind(decl) != node.kind:
            return decl  # another type: the validator's business
        if node.kind == "object" and isinstance(decl.get("properties"), dict) \
                and "additionalProperties" not in decl:
            props: dict[str, Any] = decl["properties"]
            grown: dict[str, Any] = {}
            for name, child in node.members.items():
                if name in props:
                    new = self.extend(props[name], child, (*parts, name))
                    if new is not props[name]:
                        grown[name] = new
                else:
                    grown[name] = self.declare(child, (*parts, name))
            if not grown:
                return decl
            return {**decl, "properties": {**props, **grown}}
        if node.kind == "array" and node.items is not None and isinstance(
                decl.get("items"), dict):
            items = self.extend(decl["items"], node.items, (*parts, "[]"))
            return decl if items is decl["items"] else {**decl, "items": items}
        return decl


def _base_kind(decl: Mapping[str, Any]) -> str | None:
    """The one non-null type of a declaration (``integer`` counts as ``number``), else
    None."""
    raw = decl.get("type")
    kinds = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    kinds = [k for k in kinds if k != "null"]
    if len(kinds) != 1:
        return None
    return "number" if kinds[0] == "integer" else "string" if kinds[0] == "timestamp" \
        else str(kinds[0])


def _check_names(root: Seen, known: Mapping[str, Any]) -> None:
    for name, child in root.members.items():
        if name in known:
            continue
        problem = ("is empty" if not name else
                   f"is longer than {MAX_FIELD_NAME} characters" if len(name) > MAX_FIELD_NAME
                   else "starts with __ (reserved for system columns)"
                   if name.startswith("__") else None)
        if problem is not None:
            shown = _clip(name)
            raise InferenceError("invalid_field_name", f"Field name {problem}: {shown!r}",
                                 index=child.row, field=shown)
    total = len(known) + sum(1 for name in root.members if name not in known)
    if total > MAX_FIELDS:
        raise InferenceError("too_many_fields",
                             f"A dataset has at most {MAX_FIELDS} fields ({total} with these rows)")


def new_definition(root: Seen, *, flat: bool) -> dict[str, Any]:
    """The first version (normalized form) inferred from ``root`` (see :func:`observe`)."""
    if not root.members:
        raise InferenceError("no_fields", "Cannot infer a dataset from rows without fields")
    _check_names(root, {})
    builder = _Builder(flat, 0)
    fields: dict[str, Any] = {}
    for name, child in root.members.items():
        fields[name] = {**builder.declare(child, (name,)),
                        "required": child.present == root.present}
    return {"description": DESCRIPTION, "envelope": ENVELOPE, "fields": fields}


def extend_definition(definition: Mapping[str, Any], root: Seen, *, flat: bool,
                      co_first: bool) -> dict[str, Any] | None:
    """``definition`` (normalized, inferred) grown by ``root``: new columns optional,
    null-so-far columns typed, new members of nested objects. With ``co_first`` (the rows
    raced to create the dataset and another request won), a required column some row lacks
    becomes optional too. None when nothing changes."""
    fields: dict[str, Any] = dict(definition["fields"])
    _check_names(root, fields)
    builder = _Builder(flat, _declared(fields))
    changed = False
    for name, decl in list(fields.items()):
        child = root.members.get(name)
        new = decl
        if child is not None:
            new = builder.extend(decl, child, (name,))
            if new is not decl:
                new = {**new, "required": decl.get("required", True)}
        if co_first and new.get("required") is True and (
                child is None or child.present < root.present):
            new = {**new, "required": False}
        if new is not decl:
            fields[name] = new
            changed = True
    for name, child in root.members.items():
        if name not in fields:
            fields[name] = {**builder.declare(child, (name,)), "required": False}
            changed = True
    if not changed:
        return None
    return {**definition, "fields": fields}


def _declared(fields: Mapping[str, Any]) -> int:
    """How many fields a definition declares, nested members included."""
    count = 0
    stack = list(fields.values())
    while stack:
        decl = stack.pop()
        if not isinstance(decl, Mapping):
            continue
        count += 1
        props = decl.get("properties")
        if isinstance(props, Mapping):
            stack.extend(props.values())
        if isinstance(decl.get("items"), Mapping):
            stack.append(decl["items"])
    return count


# --- the hot path: do these rows need the inference at all? ----------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
    """What rows could bring that an inferred definition lacks: members it does not
    declare, non-null values where it has seen only null. Built once per cached version."""

    kind: str
    """``object``, ``array`` or ``null`` (null so far: any other value is news)."""
    names: frozenset[str] = frozenset()
    """Of an object: its declared members."""
    members: tuple[tuple[str, Shape], ...] = ()
    """Of an object: the members that need a look inside (null so far, objects, arrays)."""
    items: Shape | None = None
    """Of an array: its items' shape."""


def _shape(decl: Any) -> Shape | None:
    """The shape of a declaration, None when no value can be news to it (a typed
    scalar, or a declaration inference does not grow)."""
    if not isinstance(decl, Mapping):
        return None
    if decl.get("type") == "null":
        return Shape("null")
    kind = _base_kind(decl)
    if kind == "object" and isinstance(decl.get("properties"), Mapping) \
            and "additionalProperties" not in decl:
        return _object_shape(decl["properties"])
    if kind == "array":
        items = _shape(decl.get("items"))
        return None if items is None else Shape("array", items=items)
    return None


def _object_shape(props: Mapping[str, Any]) -> Shape:
    members = tuple((name, shape) for name, decl in props.items()
                    if (shape := _shape(decl)) is not None)
    return Shape("object", frozenset(props), members)


def shape_of(definition: Mapping[str, Any]) -> Shape:
    """The shape of a whole (normalized, inferred) definition: a row is an object."""
    return _object_shape(definition["fields"])


def _news(shape: Shape, value: Any) -> bool:
    if value is None:
        return False
    if shape.kind == "null":
        return True
    if shape.kind == "object":
        if not isinstance(value, Mapping):
            return False  # another type: the validator's business
        if not shape.names.issuperset(value):
            return True
        return any(_news(member, value.get(name)) for name, member in shape.members)
    if not isinstance(value, list) or shape.items is None:
        return False
    items = shape.items
    return any(_news(items, element) for element in value)


def needs_inference(shape: Shape, rows: Sequence[Any]) -> bool:
    """Whether any of ``rows`` brings something the definition of ``shape`` lacks (a new
    column or member, a first non-null value). Memory only: this decides whether Redis is
    asked at all."""
    names = shape.names
    members = shape.members
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        if not names.issuperset(row):
            return True
        if members and any(_news(member, row.get(name)) for name, member in members):
            return True
    return False

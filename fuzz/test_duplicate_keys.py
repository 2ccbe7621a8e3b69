"""A repeated key anywhere in a record's JSON text is never accepted by ``validate_batch``.

Python dicts cannot hold a repeated key, so the record is written by hand with one key of one
object (top level, nested, or inside ``context``) written twice. The fast path must notice
(it counts quotes); the error names the key's path.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from fuzz.strategies import datasets, valid_records
from validator import compile_dataset

Path = tuple[str | int, ...]


def _objects(value: Any, parts: Path = ()) -> list[Path]:
    """Paths of every non-empty object in ``value``."""
    out: list[Path] = []
    if isinstance(value, dict):
        if value:
            out.append(parts)
        for k, v in value.items():
            out += _objects(v, (*parts, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _objects(v, (*parts, i))
    return out


def _dump(value: Any, at: Path | None, key: str, here: Path = ()) -> str:
    """JSON text of ``value`` with ``key`` of the object at path ``at`` written twice."""
    if isinstance(value, dict):
        items = [f"{json.dumps(k)}:{_dump(v, at, key, (*here, k))}" for k, v in value.items()]
        if here == at:
            items.append(f"{json.dumps(key)}:{_dump(value[key], None, key)}")
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(v, at, key, (*here, i)) for i, v in enumerate(value)) + "]"
    return json.dumps(value)


def _field(parts: Path) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_repeated_key_is_rejected(data: st.DataObject) -> None:
    ds = data.draw(datasets(), label="dataset")
    definition = ds.definition()
    note(f"definition: {json.dumps(definition)}")
    v = compile_dataset(definition)
    records = data.draw(st.lists(valid_records(ds), min_size=1, max_size=3), label="records")
    index = data.draw(st.integers(0, len(records) - 1), label="index")
    at = data.draw(st.sampled_from(_objects(records[index])), label="object")
    target: Any = records[index]
    for p in at:
        target = target[p]
    key = data.draw(st.sampled_from(sorted(target)), label="key")
    texts = [_dump(r, at if i == index else None, key) for i, r in enumerate(records)]
    body = ("[" + ",".join(texts) + "]").encode()
    note(f"body: {body!r}")
    batch = v.validate_batch(body)
    assert not batch.ok
    first = batch.errors[0]
    path = _field((*at, key))
    assert (first.index, first.code, first.field) == (index, "duplicate_field", path)
    assert first.message == f"Duplicate field: {path}"

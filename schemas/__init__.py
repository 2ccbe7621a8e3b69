"""The dataset definition meta-schema and the example definitions, shipped as package data
(so a wheel or ``pip install .`` has them, not only a source checkout)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

META_SCHEMA = "definition.schema.json"


def read_text(name: str) -> str:
    """A file of this package by its relative path: :data:`META_SCHEMA` or
    ``examples/<name>.json``."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def example(name: str) -> Any:
    """The example definition ``examples/<name>.json`` (``seed``, ``orders``), decoded."""
    return json.loads(read_text(f"examples/{name}.json"))

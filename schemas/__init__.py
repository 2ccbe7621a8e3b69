"""The dataset definition meta-schema, the example definitions and the built-in datasets
(Operyn's ``logs``, ``metrics`` and ``deployments``, which every project has without
registering them), shipped as package data (so a wheel or ``pip install .`` has them, not
only a source checkout)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

META_SCHEMA = "definition.schema.json"
# dataset id -> the file of its built-in definition
BUILTIN_DATASETS = {
    "logs": "builtin/operyn-logs.json",
    "metrics": "builtin/operyn-metrics.json",
    "deployments": "builtin/operyn-deployments.json",
}


def read_text(name: str) -> str:
    """A file of this package by its relative path: :data:`META_SCHEMA`,
    ``examples/<name>.json`` or ``builtin/<name>.json``."""
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def example(name: str) -> Any:
    """The example definition ``examples/<name>.json`` (``seed``, ``orders``), decoded."""
    return json.loads(read_text(f"examples/{name}.json"))


def builtin(dataset_id: str) -> Any:
    """The built-in definition of ``dataset_id`` (see :data:`BUILTIN_DATASETS`), decoded,
    or None when there is none."""
    path = BUILTIN_DATASETS.get(dataset_id)
    return None if path is None else json.loads(read_text(path))

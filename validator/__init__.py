"""Strict dataset validation: definitions compile to fast, exact record validators.

Pure: no I/O, no Redis, no HTTP. See :func:`compile_dataset`.
"""

from validator.compiled import BatchResult, CompiledDataset, compile_dataset
from validator.errors import BodyError, DefinitionError, FieldError, RecordError

__all__ = [
    "BatchResult",
    "BodyError",
    "CompiledDataset",
    "DefinitionError",
    "FieldError",
    "RecordError",
    "compile_dataset",
]

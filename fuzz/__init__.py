"""Property-based (hypothesis) tests of the dataset validator.

- ``strategies``: random definitions of the language, records valid under them, single
  faults with the error each must give, and records near every edge for differential runs.
- ``oracle``: jsonschema's Draft202012Validator with strict RFC 3339 ``date-time``/``time``
  (proved against the suite in ``test_oracle``).
- ``test_valid_records``: drawn records are valid for the validator and for the oracle.
- ``test_mutations``: one fault gives exactly its first error (code, field, message), from a
  dict and from bytes.
- ``test_differential``: validator and oracle agree on every verdict; ``validate_batch``
  agrees with ``validate`` record by record, however the JSON is written.
- ``test_hot_path``: the same on the seed's dataset and flat definitions (the typed fast
  path), with one edge value hidden in a valid batch.
- ``test_duplicate_keys``: a repeated key anywhere in a record is never accepted.
"""

"""The admin HTTP API (Bearer admin token): datasets, keys, quotas."""

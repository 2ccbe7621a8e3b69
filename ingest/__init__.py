"""The HTTP data plane: seed 004's dataset ingest endpoints."""

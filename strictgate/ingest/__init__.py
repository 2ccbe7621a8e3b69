"""The HTTP data plane: the Loguro dataset ingest endpoints and the read API."""

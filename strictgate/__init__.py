"""strictgate: shared plumbing (settings, embedded Redis, HTTP error grammar, CLI)."""

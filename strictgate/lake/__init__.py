"""The lakehouse storage: DuckLake tables per dataset, exactly-once commits, reads."""

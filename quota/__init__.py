"""Monthly quotas, admission and every Redis key name of strictgate."""

"""First-party sinchbot plugins."""

"""Synapse: the plugin gateway, with a registry persisted in SQLite."""

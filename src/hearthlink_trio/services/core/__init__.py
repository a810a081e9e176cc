"""Core: sessions and multi-agent coordination, persisted in SQLite."""

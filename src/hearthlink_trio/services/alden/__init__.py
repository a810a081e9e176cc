"""Alden: the persona assistant, with its memories kept in the Vault."""

"""The Vault's file names are written once, so the key code and the store cannot disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

import hearthlink_trio.services.vault as vault_package

VAULT_SOURCES = sorted(Path(vault_package.__file__).parent.glob("*.py"))


@pytest.mark.parametrize("name", ["vault.db", "vault.lock", "vault.key", "vault.key.new"])
def test_each_vault_file_name_is_one_constant(name: str) -> None:
    literal = f'"{name}"'
    where = [p.name for p in VAULT_SOURCES for _ in range(p.read_text().count(literal))]
    assert where == ["layout.py"], f"{literal} is written in {where}; use the layout constant"

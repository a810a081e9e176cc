"""What each layer imports: the supervisor side never loads a service's stack."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

SERVICE_STACK = ("fastapi", "uvicorn", "starlette", "cryptography")
#: The MCP SDK: loaded by `hearthlink mcp` only.
MCP_SDK = ("mcp", "mcp_types")


@pytest.mark.parametrize(
    "module",
    [
        "hearthlink_trio.cli",
        "hearthlink_trio.supervisor.supervisor",
        "hearthlink_trio.supervisor.run",
        "hearthlink_trio.control.server",
        "hearthlink_trio.control.client",
    ],
)
def test_the_supervisor_side_never_imports_the_services_stack(module: str) -> None:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    heavy = sorted(m for m in loaded if m.split(".")[0] in SERVICE_STACK + MCP_SDK)
    assert heavy == []
    assert not any(m.startswith("hearthlink_trio.services") for m in loaded)


def test_no_supervisor_module_names_a_service() -> None:
    from pathlib import Path

    import hearthlink_trio

    root = Path(hearthlink_trio.__file__).parent
    for path in root.rglob("*.py"):
        if "services" in path.relative_to(root).parts or path.parent.name == "cli":
            continue
        text = path.read_text()
        for name in ('"vault"', "'vault'", '"alden"', '"core"', '"synapse"'):
            assert name not in text, f"{path} names a service: {name}"

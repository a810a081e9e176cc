"""The whole stack: `hearthlink run` on the default config, used as a user would.

The only test on the default ports (8000-8002, 8888): it is skipped when one is taken.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import JsonServer, descendants, health_ok, pid_alive, wait_for

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "hearthlink.toml"
PORTS = {"alden": 8888, "vault": 8001, "core": 8000, "synapse": 8002}


def port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def echo(path: str, body: object) -> tuple[int, object]:
    return 200, {"echoed": body, "at": path}


def test_default_stack_end_to_end(tmp_path: Path) -> None:
    taken = [port for port in PORTS.values() if port_taken(port)]
    if taken:
        pytest.skip(f"default ports in use: {taken}")
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    env["HEARTHLINK_DATA_DIR"] = str(data_dir)
    out = (tmp_path / "stdout.log").open("wb")
    err = (tmp_path / "stderr.log").open("wb")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "hearthlink_trio", "run", "--config", str(CONFIG)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
    )
    services: dict[int, str] = {}
    try:
        for name, port in PORTS.items():
            wait_for(
                lambda port=port: (
                    health_ok(f"http://127.0.0.1:{port}/health") or supervisor.poll() is not None
                ),
                timeout=30,
                what=f"{name} to be healthy",
            )
            assert supervisor.poll() is None, (tmp_path / "stderr.log").read_text()
        services = descendants(supervisor.pid)
        assert len(services) >= 4, services
        token = (data_dir / "api.token").read_text().strip()
        with JsonServer(echo) as plugin:
            exercise(token, plugin)

        supervisor.send_signal(signal.SIGINT)
        assert supervisor.wait(timeout=20) == 0
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        out.close()
        err.close()
    wait_for(lambda: not any(pid_alive(pid) for pid in services), timeout=5, what="services gone")
    assert not [port for port in PORTS.values() if port_taken(port)]
    log = (tmp_path / "stderr.log").read_text()
    assert "alden service is healthy" in log


def exercise(token: str, plugin: JsonServer) -> None:
    headers = {"Authorization": f"Bearer {token}"}

    def client(service: str) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{PORTS[service]}", headers=headers, trust_env=False
        )

    with client("vault") as vault, client("alden") as alden:
        # Alden starts beside the Vault: it may have begun in memory-only mode, and goes
        # back to the Vault by itself once it answers.
        wait_for(
            lambda: alden.get("/health").json().get("memory_mode") == "vault",
            timeout=10,
            what="Alden to use the Vault",
        )
        note = {
            "user": "The launch code word is marmalade",
            "reply": "",
            "ts": "2025-01-01T00:00:00Z",
        }
        stored = vault.put("/v1/memories/alden/e2e-note", json={"value": note})
        assert stored.status_code == 200, stored.text
        answer = ok(alden.post("/v1/chat", json={"message": "What is the launch code word?"}))
        assert answer["memory_mode"] == "vault"
        assert answer["recalled"] == ["The launch code word is marmalade"]
        assert "marmalade" in answer["reply"]

        with client("core") as core:
            session = ok(
                core.post("/v1/sessions", json={"title": "e2e", "participants": ["me", "alden"]}),
                201,
            )
            turn = ok(
                core.post(
                    f"/v1/sessions/{session['id']}/messages",
                    json={"author": "me", "content": "Remind me of the code word"},
                ),
                201,
            )
            assert "agent_error" not in turn, turn
            assert turn["reply"]["author"] == "alden"
            assert "marmalade" in turn["reply"]["content"]
            items = ok(core.get(f"/v1/sessions/{session['id']}/messages"))["items"]
            assert [m["author"] for m in items] == ["me", "alden"]

        # Both exchanges (direct and through Core) became Vault records.
        keys = {item["key"] for item in ok(vault.get("/v1/memories/alden"))["items"]}
        assert answer["memory_key"] in keys
        assert len(keys) == 3
        assert ok(vault.get("/v1/audit/verify"))["ok"] is True

    with client("synapse") as synapse:
        manifest = {
            "name": "echo",
            "version": "1.0.0",
            "base_url": plugin.url,
            "permissions": ["say"],
        }
        ok(synapse.post("/v1/plugins", json=manifest), 201)
        result = ok(
            synapse.post("/v1/plugins/echo/invoke", json={"action": "say", "payload": {"x": 1}})
        )
        assert result == {
            "plugin": "echo",
            "action": "say",
            "status": 200,
            "result": {"echoed": {"x": 1}, "at": "/say"},
        }


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()

"""``hearthlink mcp``: the SDK's own client over stdio against a real supervisor."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult, TextContent

from tests.stack import Stack, running

TOOLS = {"status", "logs", "events", "restart", "stop", "start", "wait"}
SECRET_FILE = "leaky.key"
# Prints its secret and the API token, then idles: the MCP server must never return them.
LEAKY = (
    "import os, time; "
    "print('key=' + os.environ['LEAKY_KEY'] + ' token=' + os.environ['HEARTHLINK_API_TOKEN']); "
    "print('warming up'); print('ready to serve', flush=True); "
    "time.sleep(1000)"
)


@asynccontextmanager
async def mcp_client(config: Path) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "hearthlink_trio", "mcp", "--config", str(config)],
        env={"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]},
        cwd=config.parent,
    )
    async with Client(params, read_timeout_seconds=30) as client:
        yield client


def _text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def _data(result: CallToolResult) -> Any:
    assert not result.is_error, _text(result)
    if result.structured_content is not None:
        data = result.structured_content
        # A non-object return value comes wrapped as {"result": ...}.
        return data.get("result", data) if set(data) == {"result"} else data
    return json.loads(_text(result))


def _stack(tmp_path: Path) -> Stack:
    stack = Stack(tmp_path)
    stack.add("web")
    leaky = stack.add(
        "leaky",
        command=[sys.executable, "-c", LEAKY],
        probe="none",
        secrets={"LEAKY_KEY": SECRET_FILE},
    )
    del leaky["script"], leaky["port"]
    return stack


async def test_the_tools_over_stdio_against_a_running_supervisor(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    with running(config) as sup:
        sup.wait_line("web service is healthy")
        sup.wait_line("leaky service is healthy")
        secret = (stack.data_dir / SECRET_FILE).read_text().strip()
        token = (stack.data_dir / "api.token").read_text().strip()
        async with mcp_client(config) as client:
            listed = (await client.list_tools()).tools
            assert {tool.name for tool in listed} == TOOLS
            for tool in listed:
                assert tool.description and len(tool.description) > 40, tool.name
                assert tool.input_schema["type"] == "object"
            logs_schema = next(t for t in listed if t.name == "logs").input_schema
            assert logs_schema["required"] == ["service"]
            assert {"lines", "pattern"} <= set(logs_schema["properties"])

            status = _data(await client.call_tool("status", {}))
            states = {s["name"]: s["state"] for s in status["services"]}
            assert states == {"web": "healthy", "leaky": "healthy"}

            # The service printed its secret and the token: both come back masked.
            logs = _text(await client.call_tool("logs", {"service": "leaky", "lines": 10}))
            assert "key=*** token=***" in logs
            assert secret not in logs
            assert token not in logs
            assert logs.splitlines()[-1] == "ready to serve"
            grep = _text(
                await client.call_tool("logs", {"service": "leaky", "pattern": "^(warm|ready)"})
            )
            assert grep.splitlines() == ["warming up", "ready to serve"]
            one = _text(await client.call_tool("logs", {"service": "leaky", "lines": 1}))
            assert one == "ready to serve"

            restarted = await client.call_tool("restart", {"service": "web"})
            assert not restarted.is_error, _text(restarted)
            assert "Restart of web requested" in _text(restarted)
            waited = _data(await client.call_tool("wait", {"services": ["web"], "timeout": 20}))
            assert waited["ready"] is True, waited
            assert waited["services"] == ["web"]

            recent = _data(await client.call_tool("events", {"seconds": 60}))["events"]
            web_states = [
                e["state"] for e in recent if e.get("type") == "state" and e["service"] == "web"
            ]
            # The start, then the restart just asked for, in order.
            assert web_states[:2] == ["starting", "healthy"]
            assert web_states[-3:] == ["stopping", "starting", "healthy"], web_states
            assert any(e.get("type") == "supervisor" for e in recent)
            # The route behind the tool, with curl, and its answer to a bad window.
            sock = str(stack.data_dir / "run" / "hearthlink.sock")
            curl = ["curl", "-s", "--unix-socket", sock, "-w", "\n%{http_code}"]
            ok = subprocess.run(
                [*curl, "http://x/v1/events/recent?seconds=5"], capture_output=True, text=True
            )
            body, code = ok.stdout.rsplit("\n", 1)
            assert code == "200"
            assert json.loads(body)["seconds"] == 5
            bad = subprocess.run(
                [*curl, "http://x/v1/events/recent?seconds=nan"], capture_output=True, text=True
            )
            body, code = bad.stdout.rsplit("\n", 1)
            assert code == "400"
            assert json.loads(body) == {
                "error": "bad_request",
                "detail": "seconds must be a number 0 or more, not 'nan'",
            }

            stopped = await client.call_tool("stop", {"service": "leaky"})
            assert "Stop of leaky requested" in _text(stopped)
            sup.wait_line("Stopped leaky service")
            not_ready = _data(
                await client.call_tool("wait", {"services": ["leaky"], "timeout": 0.3})
            )
            assert not_ready["ready"] is False
            assert list(not_ready["laggards"]) == ["leaky"]
            started = await client.call_tool("start", {"service": "leaky"})
            assert "Start of leaky requested" in _text(started)
            assert _data(await client.call_tool("wait", {"timeout": 20}))["ready"] is True


async def test_errors_are_tool_errors_and_the_server_goes_on(tmp_path: Path) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    async with mcp_client(config) as client:
        # No supervisor yet.
        for name, args in [
            ("status", {}),
            ("events", {}),
            ("restart", {"service": "web"}),
            ("wait", {"timeout": 1}),
        ]:
            result = await client.call_tool(name, args)
            assert result.is_error, (name, _text(result))
            assert "no hearthlink supervisor is running" in _text(result), _text(result)
        outside = await client.call_tool("logs", {"service": "../../etc/passwd"})
        assert outside.is_error
        assert "'../../etc/passwd' is not a service name" in _text(outside)
        nolog = await client.call_tool("logs", {"service": "web"})
        assert nolog.is_error
        assert "no log yet for web" in _text(nolog)
        with running(config) as sup:
            sup.wait_line("web service is healthy")
            for name, args, expected in [
                ("logs", {"service": "nope"}, "no service named 'nope' (services: web, leaky)"),
                ("logs", {"service": "web", "pattern": "("}, "is not a valid regex"),
                ("restart", {"service": "nope"}, "no service named 'nope'"),
                ("stop", {"service": "nope"}, "no service named 'nope'"),
                ("wait", {"services": ["nope"]}, "no service named 'nope'"),
                ("logs", {"service": "web", "lines": 0}, "lines"),
            ]:
                result = await client.call_tool(name, args)
                assert result.is_error, (name, args, _text(result))
                assert expected in _text(result), (name, _text(result))
            # Still serving after all of that.
            status = _data(await client.call_tool("status", {}))
            assert {s["name"] for s in status["services"]} == {"web", "leaky"}


async def test_secrets_the_supervisor_took_from_its_environment_are_masked_too(
    tmp_path: Path,
) -> None:
    stack = _stack(tmp_path)
    config = stack.write()
    # Neither value is in a file, nor in the MCP server's own environment.
    key, token = "k3y-from-the-environment-0123", "t0ken-from-the-environment-0123"
    env = {"LEAKY_KEY": key, "HEARTHLINK_API_TOKEN": token}
    with running(config, env=env) as sup:
        sup.wait_line("leaky service is healthy")
        assert not (stack.data_dir / SECRET_FILE).exists()
        async with mcp_client(config) as client:
            logs = _text(await client.call_tool("logs", {"service": "leaky"}))
            assert "key=*** token=***" in logs
            assert key not in logs
            assert token not in logs

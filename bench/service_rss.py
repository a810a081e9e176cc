"""RSS of the four bundled services, as the default config runs them, before and after use.

Runs ``hearthlink run`` on a copy of config/hearthlink.toml with free ports and a temporary
data dir, waits until every service answers ``/health``, and reads each service's VmRSS
(what ``ps -o rss`` shows) one second later; then makes one request of every kind to each
(the Vault's five routes and a refusal, Alden's chat and memories, Core's sessions and a
message Alden answers, Synapse's plugin routes and an invocation of a local plugin), twice,
and reads VmRSS again: modules imported at a route's first use count then. SPEC §9's
budget is 50 MiB per service (tests/e2e/test_service_memory.py asserts it).

    .venv/bin/python bench/service_rss.py [--hearthlink CMD] [--json]

``--hearthlink`` is the command that runs hearthlink (default: this interpreter with
``-m hearthlink_trio``): e.g. another checkout's ``.venv/bin/hearthlink`` to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import procs
from net import free_ports

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PORTS = {"alden": 8888, "vault": 8001, "core": 8000, "synapse": 8002}


def rss_mib(pid: int) -> float:
    found = procs.rss_mib(pid)
    if found is None:
        raise RuntimeError(f"no VmRSS for {pid}")
    return found


def service_pids(supervisor: int) -> dict[str, int]:
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != supervisor:
            continue
        match = re.search(r"hearthlink_trio\.services\.(\w+) ", cmd)
        if match:
            found[match.group(1)] = int(entry)
    return found


class Plugin(BaseHTTPRequestHandler):
    """A Synapse plugin that answers every action with ``{"ok": true}``."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def exercise(urls: dict[str, str], token: str, plugin: str) -> None:
    """One request of every kind to each service; raises if one is not answered as expected."""
    with httpx.Client(
        headers={"Authorization": f"Bearer {token}"}, trust_env=False, timeout=30
    ) as c:
        vault = urls["vault"]
        memory = f"{vault}/v1/memories/bench/one"
        c.put(memory, json={"value": {"n": 1}}).raise_for_status()
        c.get(memory).raise_for_status()
        c.get(f"{vault}/v1/memories/bench").raise_for_status()
        c.get(f"{vault}/v1/audit/verify").raise_for_status()
        c.delete(memory).raise_for_status()
        assert c.get(memory).status_code == 404
        assert c.put(memory, content=b"{bad").status_code == 400
        alden = urls["alden"]
        c.post(f"{alden}/v1/chat", json={"message": "hello", "session_id": "s1"}).raise_for_status()
        c.get(f"{alden}/v1/memories").raise_for_status()
        assert c.post(f"{alden}/v1/chat", json={"message": ""}).status_code == 422
        core = urls["core"]
        session = c.post(
            f"{core}/v1/sessions", json={"title": "t", "participants": ["ann", "alden"]}
        )
        session.raise_for_status()
        sid = session.json()["id"]
        c.get(f"{core}/v1/sessions").raise_for_status()
        c.get(f"{core}/v1/sessions/{sid}").raise_for_status()
        posted = c.post(
            f"{core}/v1/sessions/{sid}/messages", json={"author": "ann", "content": "hi"}
        )
        posted.raise_for_status()
        assert "reply" in posted.json(), posted.text
        c.get(f"{core}/v1/sessions/{sid}/messages").raise_for_status()
        synapse = urls["synapse"]
        c.delete(f"{synapse}/v1/plugins/echo")
        manifest = {"name": "echo", "version": "1", "base_url": plugin, "permissions": ["run"]}
        c.post(f"{synapse}/v1/plugins", json=manifest).raise_for_status()
        c.get(f"{synapse}/v1/plugins").raise_for_status()
        c.get(f"{synapse}/v1/plugins/echo").raise_for_status()
        c.post(f"{synapse}/v1/plugins/echo/invoke", json={"action": "run"}).raise_for_status()
        assert c.post(f"{synapse}/v1/plugins", json={"name": "x"}).status_code == 422


def measure(hearthlink: list[str]) -> dict[str, dict[str, float]]:
    tmp = Path(tempfile.mkdtemp(prefix="service-rss-"))
    ports = dict(zip(DEFAULT_PORTS, free_ports(len(DEFAULT_PORTS)), strict=True))
    text = (ROOT / "config" / "hearthlink.toml").read_text()
    for name, default in DEFAULT_PORTS.items():
        text = re.sub(rf"^port = {default}$", f"port = {ports[name]}", text, flags=re.M)
    config = tmp / "hearthlink.toml"
    config.write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTHLINK_")}
    env["HEARTHLINK_DATA_DIR"] = str(tmp / "data")
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    plugin = ThreadingHTTPServer(("127.0.0.1", 0), Plugin)
    threading.Thread(target=plugin.serve_forever, daemon=True).start()
    with open(tmp / "run.log", "wb") as log:
        sup = subprocess.Popen(
            [*hearthlink, "run", "--config", str(config)],
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        for name, url in urls.items():
            while True:
                try:
                    if httpx.get(f"{url}/health", trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or sup.poll() is not None:
                    raise SystemExit(f"{name} never healthy:\n{(tmp / 'run.log').read_text()}")
                time.sleep(0.05)
        time.sleep(1.0)
        pids = service_pids(sup.pid)
        result = {name: {"healthy_mib": rss_mib(pid)} for name, pid in pids.items()}
        token = (tmp / "data" / "api.token").read_text().strip()
        for _ in range(2):
            exercise(urls, token, f"http://127.0.0.1:{plugin.server_address[1]}")
        time.sleep(0.5)
        for name, pid in pids.items():
            result[name]["used_mib"] = rss_mib(pid)
        return result
    finally:
        sup.send_signal(signal.SIGINT)
        sup.wait(30)
        plugin.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hearthlink", default=f"{sys.executable} -m hearthlink_trio")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    result = measure(shlex.split(args.hearthlink))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print("| service | RSS healthy | RSS after one request of each kind |")
    print("|---|---|---|")
    for name in DEFAULT_PORTS:
        one = result[name]
        print(f"| {name} | {one['healthy_mib']:.1f} MiB | {one['used_mib']:.1f} MiB |")


if __name__ == "__main__":
    main()

"""The example's web app: a greeting from PostgreSQL and a hit counter in Redis."""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from redis_client import command

PG_PORT = os.environ["PG_PORT"]
REDIS_PORT = int(os.environ["REDIS_PORT"])


def greeting() -> str:
    query = "SELECT text FROM greetings WHERE id = 1"
    args = ["psql", "-At", "-h", "127.0.0.1", "-p", PG_PORT, "-U", "postgres", "-c", query]
    return subprocess.run(
        args, capture_output=True, text=True, check=True, timeout=5
    ).stdout.strip()


class Handler(BaseHTTPRequestHandler):
    wbufsize = 1 << 16

    def do_GET(self) -> None:
        if self.path == "/health":
            self._answer(200, b"ok", "text/plain")
            return
        try:
            body = {"greeting": greeting(), "hits": command(REDIS_PORT, "INCR", "hits")}
        except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
            self._answer(503, json.dumps({"error": str(exc)}).encode(), "application/json")
            return
        self._answer(200, json.dumps(body).encode(), "application/json")

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if os.environ.get("LISTEN_FDS") == "1" and os.environ.get("LISTEN_PID") == str(os.getpid()):
        # hearthlink holds the port (socket = true) and passes it as fd 3: serve on it, so
        # a restart refuses no connection.
        server = ThreadingHTTPServer((args.host, args.port), Handler, bind_and_activate=False)
        server.socket.close()
        server.socket = socket.socket(fileno=3)
    else:
        server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"app listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

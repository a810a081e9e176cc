"""Just enough of the Redis protocol (RESP) for the example: one command, one reply."""

from __future__ import annotations

import socket


def command(port: int, *args: str, host: str = "127.0.0.1") -> bytes | int | None:
    """Send one command; return the reply (bulk string, integer or simple string)."""
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(payload)
        reply = sock.makefile("rb").readline()
        kind, rest = reply[:1], reply[1:].rstrip(b"\r\n")
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"$":
            if int(rest) < 0:
                return None
            return sock.makefile("rb").read(int(rest) + 2)[:-2]
        raise RuntimeError(f"redis said {reply!r}")

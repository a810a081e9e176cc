"""A worker without a port: counts heartbeats in Redis until SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import time

from redis_client import command

PORT = int(os.environ["REDIS_PORT"])


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    command(PORT, "PING")
    print("worker ready", flush=True)
    while True:
        command(PORT, "INCR", "heartbeats")
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())

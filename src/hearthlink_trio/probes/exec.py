"""The exec probe: a program that exits 0 when the service is well (``pg_isready``, say).

It runs without a shell as a child of the supervisor like any service (its own process
group, a parent-death signal, awaited through its pidfd, so the supervisor never blocks on
it), with the service's environment. Past the timeout its whole group is killed; in every
case the group is swept and the program reaped, so a probe never leaves a process behind.
Its output stays out of the service's log; its last line is part of a failure's reason.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import trio

from hearthlink_trio.process.lines import LineSplitter
from hearthlink_trio.process.spawn import describe_exit, spawn

#: A probe's output beyond this is read and dropped: only its last line is kept.
READ_BYTES = 16 * 1024
#: The longest last line quoted in a failure's reason.
MAX_REASON_CHARS = 200


async def probe_exec(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float
) -> str | None:
    """None when ``argv`` exits 0 within ``timeout``, else why not (with its last line)."""
    try:
        child = spawn(argv, env=env, cwd=cwd)
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in an argument
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        return f"cannot run {argv[0]}: {why}"
    last = {"stdout": "", "stderr": ""}
    timed_out = False
    try:
        async with trio.open_nursery() as nursery:

            async def keep_last_line(name: str, stream: trio.abc.ReceiveStream) -> None:
                splitter = LineSplitter()
                while chunk := await stream.receive_some(READ_BYTES):
                    for raw in splitter.feed(bytes(chunk)):
                        if raw.strip():
                            last[name] = raw.decode("utf-8", "replace").strip()
                for raw in splitter.flush():
                    if raw.strip():
                        last[name] = raw.decode("utf-8", "replace").strip()

            nursery.start_soon(keep_last_line, "stdout", child.stdout)
            nursery.start_soon(keep_last_line, "stderr", child.stderr)
            try:
                with trio.move_on_after(timeout) as deadline:
                    await child.wait_exited()
                timed_out = deadline.cancelled_caught
            finally:
                # The group goes now, whatever is left of it and whatever ended the wait (a
                # probe cancelled because its service exited too); the pipes close with it.
                # Shielded inside, so it happens on a cancellation as well.
                code = await child.stop(signal.SIGKILL, 0.0)
                nursery.cancel_scope.cancel()
    finally:
        child.close_streams()
    # What a failing program says last on stderr is its reason; else its last output line.
    line = last["stderr"] or last["stdout"]
    said = f": {line[:MAX_REASON_CHARS]}" if line else ""
    if timed_out:
        return f"{argv[0]} timed out after {timeout:g}s{said}"
    if code != 0:
        return f"{argv[0]} failed ({describe_exit(code)}){said}"
    return None

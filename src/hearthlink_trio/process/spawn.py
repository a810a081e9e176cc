"""Service processes: spawn with a parent-death signal, await through a pidfd, stop by group.

Why not ``trio.lowlevel.open_process``: trio forks from its worker-thread cache, and
``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, so a child armed
there dies when an idle worker retires . We fork from the trio main thread
with :class:`subprocess.Popen` (a few milliseconds of blocking) and learn of the exit
through a pidfd, which trio can wait on like any file descriptor.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pwd
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from hearthlink_trio.process.groups import killpg
from hearthlink_trio.process.procfs import proc_stat

PR_SET_PDEATHSIG = 1
# Looked up once here: a lookup in the forked child would be repeated on every spawn.
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def _arm_parent_death_signal(parent: int) -> None:
    # Runs in the child between fork and exec: one prctl call and nothing else that could
    # take a lock. If the parent died before the prctl, the signal will never come: exit.
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def describe_exit(returncode: int) -> str:
    """``exit status 1`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}"
    return f"exit status {returncode}"


@dataclass
class Child:
    """A running service process, leader of its own session and process group."""

    popen: subprocess.Popen[bytes]
    pidfd: int
    stdout: trio.lowlevel.FdStream
    stderr: trio.lowlevel.FdStream
    start_ticks: int | None

    @property
    def pid(self) -> int:
        return self.popen.pid

    async def wait_exited(self) -> None:
        """Return once the process has exited (it stays a zombie until :meth:`reap`)."""
        if self.popen.returncode is None:
            await trio.lowlevel.wait_readable(self.pidfd)

    def peek_returncode(self) -> int:
        """The exit status of an exited, not yet reaped process (``-N`` for signal N)."""
        if self.popen.returncode is not None:
            return self.popen.returncode
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        if info is None:  # pragma: no cover - only with WNOHANG
            return 0
        if info.si_code == os.CLD_EXITED:
            return info.si_status
        return -info.si_status

    def reap(self) -> int:
        """Collect the exit status of an exited process and close the pidfd."""
        code = self.popen.wait()
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        return code

    async def stop(self, stop_signal: int, timeout: float, force: trio.Event | None = None) -> int:
        """Stop the whole process group and reap the leader; returns its exit status.

        Sends ``stop_signal`` to the group, waits up to ``timeout`` (less if ``force`` is set
        meanwhile), then SIGKILLs what is left of the group. Shielded: a stop that has begun
        always finishes, so no process outlives it.
        """
        with trio.CancelScope(shield=True):
            if self.popen.returncode is None:
                forced = force is not None and force.is_set()
                killpg(self.pid, signal.SIGKILL if forced else stop_signal)
                with trio.move_on_after(timeout):
                    async with trio.open_nursery() as nursery:

                        async def exited() -> None:
                            await self.wait_exited()
                            nursery.cancel_scope.cancel()

                        async def forced_now() -> None:
                            if force is None:
                                return
                            await force.wait()
                            killpg(self.pid, signal.SIGKILL)

                        nursery.start_soon(exited)
                        nursery.start_soon(forced_now)
            # The sweep: grandchildren that stayed in the group go now. The leader is not
            # reaped yet (a zombie keeps its pid, and so the group id, from being reused).
            killpg(self.pid, signal.SIGKILL)
            await self.wait_exited()
        return self.reap()

    def close_streams(self) -> None:
        for stream in (self.stdout, self.stderr):
            with contextlib.suppress(trio.ClosedResourceError, OSError):
                stream.close()


def spawn(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, user: str = "") -> Child:
    """Start ``argv`` as a new session leader with stdin from /dev/null and piped output.

    With ``user``, the process runs as that user, its group and its groups (switched by
    subprocess in the child before exec; the parent-death signal is armed after the switch,
    which would otherwise clear it). Must be called from the trio main thread (see the
    module docstring).

    Raises:
        OSError: the program could not be started (not found, not executable, …).
    """
    uid = gid = None
    groups = None
    if user:
        account = pwd.getpwnam(user)
        uid, gid = account.pw_uid, account.pw_gid
        groups = os.getgrouplist(user, gid)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            preexec_fn=functools.partial(_arm_parent_death_signal, os.getpid()),
            close_fds=True,
            user=uid,
            group=gid,
            extra_groups=groups,
        )
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:
        # Out of file descriptors, say: do not leave the process running untracked.
        killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    return Child(
        popen=popen,
        pidfd=pidfd,
        stdout=trio.lowlevel.FdStream(out_r),
        stderr=trio.lowlevel.FdStream(err_r),
        start_ticks=stat.start_ticks if (stat := proc_stat(popen.pid)) else None,
    )

"""Service processes: spawn with a parent-death signal, await through a pidfd, stop by group.

Why not ``trio.lowlevel.open_process``: trio forks from its worker-thread cache, and
``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits, so a child armed
there dies when an idle worker retires . We fork from the trio main thread
with :class:`subprocess.Popen` and learn of the exit through a pidfd, which trio can wait on
like any file descriptor.

The parent-death signal must be armed by the child itself, between fork and exec. Where
util-linux's ``setpriv`` is, the child executes ``setpriv --pdeathsig KILL -- <service>``:
no Python runs in the child, so Popen uses vfork (a fraction of a millisecond, where a fork
that runs Python in the child costs 3-15 ms on a busy machine, much of it waiting for the
child to be scheduled). A service that switches user or gets a held socket is prepared by
Python code in the child as before, and so is every service where setpriv is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pwd
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import trio

from hearthlink_trio.process import cgroups, own
from hearthlink_trio.process.groups import killpg
from hearthlink_trio.process.notify import NotifyReceiver
from hearthlink_trio.process.procfs import proc_stat
from hearthlink_trio.process.setpriv import check_program, pdeathsig_wrapper
from hearthlink_trio.process.sockets import LISTEN_FD
from hearthlink_trio.process.tree import RUN_ENV, Lineage, kill_all, reap_zombies, service_processes

PR_SET_PDEATHSIG = 1
# Looked up once here: a lookup in the forked child would be repeated on every spawn.
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_clearenv = _libc.clearenv
_setenv = _libc.setenv
_setenv.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)

KillMode = Literal["group", "mixed"]
#: How long a stop waits, after its SIGKILL, for the last processes of a service to die.
KILL_WAIT_SECONDS = 2.0
#: How often a stop that waits says what it waits for.
WAITING_REPORT_SECONDS = 1.0


def _prepare_child(
    parent: int, cgroup_procs: int, listen: tuple[int, list[tuple[bytes, bytes]]] | None = None
) -> None:
    # Runs in the child between fork and exec: a few system calls and nothing else that
    # could take a lock. Joining the cgroup here, before exec, is what makes it complete:
    # moved after its exec, a service could fork (and its child leave for the subreaper)
    # outside. The file was opened by the parent, so this is one write.
    if cgroup_procs >= 0:
        os.write(cgroup_procs, b"0")
    # If the parent died before the prctl, the signal will never come: exit.
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
    if listen is not None:
        # A passed socket: fd 3 and LISTEN_PID, which only the child knows. The environment
        # is set here, in the C environ that exec hands on (the spawn passes env=None):
        # setenv copies its arguments, so nothing dangles once this function returns.
        fd, environ = listen
        os.dup2(fd, LISTEN_FD)  # dup2 leaves the new fd inheritable
        _clearenv()
        for key, value in environ:
            _setenv(key, value, 1)
        _setenv(b"LISTEN_PID", str(os.getpid()).encode(), 1)


def describe_signal(signum: int) -> str:
    """``SIGTERM``, or ``signal 64`` for one without a name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit(returncode: int) -> str:
    """``exit status 1`` or ``killed by SIGKILL``."""
    if returncode < 0:
        return f"killed by {describe_signal(-returncode)}"
    return f"exit status {returncode}"


@dataclass
class Child:
    """A running service process, leader of its own session and process group."""

    popen: subprocess.Popen[bytes]
    pidfd: int
    #: The read ends of its stdout and stderr pipes (streams are made on first use).
    stdout_fd: int
    stderr_fd: int
    start_ticks: int | None
    lineage: Lineage | None = None
    #: Its notify socket (``probe = "notify"``), closed with its streams.
    notify: NotifyReceiver | None = None
    #: Set once the process is in its service's cgroup (at once where it started there).
    contained: threading.Event = field(default_factory=threading.Event)
    #: Every process ever found to be the service's: the zombies among them are ours to reap.
    _seen: set[int] = field(default_factory=set)
    _streams: tuple[trio.lowlevel.FdStream, trio.lowlevel.FdStream] | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _pipes(self) -> tuple[trio.lowlevel.FdStream, trio.lowlevel.FdStream]:
        # Made on first use, so that a process can be started before trio is even imported
        # (``hearthlink run`` starts the first services while the supervisor loads).
        if self._streams is None:
            import trio

            self._streams = (
                trio.lowlevel.FdStream(self.stdout_fd),
                trio.lowlevel.FdStream(self.stderr_fd),
            )
        return self._streams

    @property
    def stdout(self) -> trio.lowlevel.FdStream:
        return self._pipes()[0]

    @property
    def stderr(self) -> trio.lowlevel.FdStream:
        return self._pipes()[1]

    def processes(self) -> dict[int, int]:
        """The service's live processes, ``{pid: pgid}``: its group, descendants, marked
        ones, its cgroup's."""
        found = service_processes(self.pid, self.start_ticks, self.lineage)
        self._seen.update(found)
        return found

    def share_service(self) -> None:
        """From now on count only this process's group and descendants as its own, not the
        service's cgroup or marked processes: a successor of the service (a rolling
        restart) runs beside it there, and stopping this process must not touch it."""
        self.lineage = None
        self._seen.clear()

    async def wait_exited(self) -> None:
        """Return once the process has exited (it stays a zombie until :meth:`reap`)."""
        import trio

        if self.popen.returncode is None:
            await trio.lowlevel.wait_readable(self.pidfd)

    def _has_exited(self) -> bool:
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

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
        own.forget(self.pid)
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        return code

    async def stop(
        self,
        stop_signal: int,
        timeout: float,
        force: trio.Event | None = None,
        *,
        kill_mode: KillMode = "group",
        waiting: Callable[[float, int], None] | None = None,
    ) -> int:
        """Stop the service's processes and reap the leader; returns its exit status.

        Sends ``stop_signal`` to the group and to the service's processes outside it
        (``kill_mode="mixed"``: to the main process only), waits up to ``timeout`` for the
        main process (less if ``force`` is set meanwhile), then SIGKILLs every process left
        (group, cgroup, descendants) and waits until they are gone. While it waits it calls
        ``waiting(seconds since the signal, processes left)`` once a second. Shielded: a stop
        that has begun always finishes, so no process outlives it.
        """
        import trio

        if self.pidfd < 0 and self.popen.returncode is not None:
            # Stopped and reaped already (a rolling restart stops the old process itself):
            # its pid may be another process's by now, so nothing is signalled.
            return self.popen.returncode
        with trio.CancelScope(shield=True):
            # A process that has exited already (a crash) gets no stop signal and no grace:
            # what is left of it goes in the sweep below, at once.
            if self.popen.returncode is None and not self._has_exited():
                if force is not None and force.is_set():
                    self._signal(signal.SIGKILL, "group")
                else:
                    self._signal(stop_signal, kill_mode)
                began = trio.current_time()
                with trio.move_on_after(timeout):
                    async with trio.open_nursery() as nursery:

                        async def exited() -> None:
                            await self.wait_exited()
                            nursery.cancel_scope.cancel()

                        async def forced_now() -> None:
                            if force is None:
                                return
                            await force.wait()
                            self._signal(signal.SIGKILL, "group")

                        async def report() -> None:
                            if waiting is None:
                                return
                            while True:
                                await trio.sleep(WAITING_REPORT_SECONDS)
                                left = self.processes()  # a walk of /proc, once a second
                                waiting(trio.current_time() - began, len(left))

                        nursery.start_soon(exited)
                        nursery.start_soon(forced_now)
                        nursery.start_soon(report)
            # The sweep: what stayed in the group, the cgroup or left them goes now. The
            # leader is not reaped yet (a zombie keeps its pid, and so the group id, from
            # being reused). A process started a moment ago is first let into its cgroup,
            # with whatever it forked: the sweep of a cgroup finds only what is in it.
            if not self.contained.is_set():
                await trio.to_thread.run_sync(self.contained.wait, KILL_WAIT_SECONDS)
            await self._kill_the_rest()
            await self.wait_exited()
        code = self.reap()
        reap_zombies(self._seen, self.pid)
        return code

    def _signal(self, sig: int, kill_mode: KillMode) -> None:
        if kill_mode == "mixed" and sig != signal.SIGKILL:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            return
        killpg(self.pid, sig)
        if sig == signal.SIGKILL:
            if self.lineage is not None and self.lineage.cgroup is not None:
                cgroups.kill(self.lineage.cgroup)
            kill_all(self.processes())
        else:
            # Those that left the group get the stop signal too, once: a second SIGTERM is
            # "hurry up" to some programs.
            kill_all((pid for pid, pgid in self.processes().items() if pgid != self.pid), sig)

    async def _kill_the_rest(self) -> None:
        import trio

        with trio.move_on_after(KILL_WAIT_SECONDS):
            cgroup = self.lineage.cgroup if self.lineage else None
            while True:
                killpg(self.pid, signal.SIGKILL)
                if cgroup is not None:
                    cgroups.kill(cgroup)
                left = self.processes()
                if not left and not (cgroup is not None and cgroups.populated(cgroup)):
                    return
                kill_all(left)
                await trio.sleep(0.005)

    def close_streams(self) -> None:
        if self.notify is not None:
            self.notify.close()
        if self._streams is None:  # never read: close the raw ends
            for fd in (self.stdout_fd, self.stderr_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self.stdout_fd = self.stderr_fd = -1
            return
        import trio

        for stream in self._streams:
            with contextlib.suppress(trio.ClosedResourceError, OSError):
                stream.close()


def _ensure_open(fd: int) -> None:
    """Make ``fd`` a valid descriptor of this process (/dev/null, close-on-exec) if it is not."""
    try:
        os.fstat(fd)
    except OSError:
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if null != fd:
            os.dup2(null, fd, inheritable=False)
            os.close(null)


def _close_opened(path: Path) -> None:
    """Raise what opening ``path`` for writing raises (OSError naming it)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
    except OSError as exc:
        raise OSError(
            exc.errno, f"could not join the cgroup {path.parent}: {exc.strerror}"
        ) from None


def spawn_attached(argv: Sequence[str], *, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` in hearthlink's own session and process group, with its stdin, stdout
    and stderr, and the parent-death signal: a command run in the foreground for the user,
    which gets the terminal's Ctrl-C itself, as under a shell. Must be called from the trio
    main thread.

    Raises:
        OSError: the program could not be started.
    """
    popen = subprocess.Popen(
        list(argv),
        env=dict(env),
        preexec_fn=functools.partial(_prepare_child, os.getpid(), -1),
        close_fds=True,
    )
    own.remember(popen.pid)
    return popen


def spawn(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    user: str = "",
    lineage: Lineage | None = None,
    listen: tuple[int, str] | None = None,
) -> Child:
    """Start ``argv`` as a new session leader with stdin from /dev/null and piped output.

    With ``user``, the process runs as that user, its group and its groups (switched by
    subprocess in the child before exec; the parent-death signal is armed after the switch,
    which would otherwise clear it). With a ``lineage``, the process carries the run's mark
    in its environment and joins the service's cgroup, if it has one: before exec where
    the child runs Python code anyway, else (started through setpriv, see the module's
    docstring) the caller moves it, with what it forked meanwhile, and sets
    :attr:`Child.contained` (``launcher``). With ``listen``
    (a listening socket's fd and its name), the process gets that socket as its fd 3 with
    ``LISTEN_FDS=1``, ``LISTEN_FDNAMES=<name>`` and ``LISTEN_PID=<its own pid>``. Must be called
    from the trio main thread (see the module docstring).

    Raises:
        OSError: the program could not be started (not found, not executable, …), or could
            not join its cgroup.
    """
    uid = gid = None
    groups = None
    if user:
        account = pwd.getpwnam(user)
        uid, gid = account.pw_uid, account.pw_gid
        groups = os.getgrouplist(user, gid)
    env = dict(env)
    procs = None
    if lineage is not None:
        env[RUN_ENV] = lineage.run_id
        if lineage.cgroup is not None:
            procs = lineage.cgroup / "cgroup.procs"
    executable = None
    listen_env = None
    pass_fds: tuple[int, ...] = ()
    if listen is not None:
        env["LISTEN_FDS"] = "1"
        env["LISTEN_FDNAMES"] = listen[1]
        env.pop("LISTEN_PID", None)
        listen_env = (listen[0], [(k.encode(), v.encode()) for k, v in env.items()])
        # Kept open across the close of every other fd; its number must be a valid fd in
        # this process for that (it is replaced by the socket before exec).
        _ensure_open(LISTEN_FD)
        pass_fds = (LISTEN_FD,)
        # With env=None, Popen would look the program up on the supervisor's PATH: look
        # it up on the service's, as with an environment given.
        if os.sep not in argv[0]:
            executable = shutil.which(argv[0], path=os.pathsep.join(os.get_exec_path(env)))
    wrapper = None if user or listen is not None else pdeathsig_wrapper()
    if wrapper is not None:
        check_program(argv[0], env, cwd)
        if procs is not None:
            # Opened here only to report a cgroup it could not join as a failed start.
            _close_opened(procs)
    cgroup_procs = -1
    if wrapper is None and procs is not None:
        cgroup_procs = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        if wrapper is not None:
            # No Python in the child: Popen forks with vfork, which neither copies the
            # supervisor's memory map nor waits for the child to be scheduled before exec.
            popen = subprocess.Popen(
                [*wrapper, *argv],
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                env=env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        else:
            popen = subprocess.Popen(
                list(argv),
                executable=executable,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                env=env if listen_env is None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=functools.partial(_prepare_child, os.getpid(), cgroup_procs, listen_env),
                close_fds=True,
                pass_fds=pass_fds,
                user=uid,
                group=gid,
                extra_groups=groups,
            )
    except subprocess.SubprocessError as exc:
        for fd in (out_r, err_r):
            os.close(fd)
        # Only the cgroup write can fail in the child before exec.
        raise OSError(f"could not join the cgroup {procs}: {exc}") from None
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
        if cgroup_procs >= 0:
            os.close(cgroup_procs)
    try:
        pidfd = os.pidfd_open(popen.pid)
    except OSError:
        # Out of file descriptors, say: do not leave the process running untracked.
        killpg(popen.pid, signal.SIGKILL)
        popen.wait()
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    own.remember(popen.pid)
    child = Child(
        popen=popen,
        pidfd=pidfd,
        stdout_fd=out_r,
        stderr_fd=err_r,
        start_ticks=stat.start_ticks if (stat := proc_stat(popen.pid)) else None,
        lineage=lineage,
    )
    if procs is None or wrapper is None:
        child.contained.set()
    return child

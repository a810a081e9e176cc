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
import errno
import functools
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import trio

from hearthlink_trio.process import cgroups
from hearthlink_trio.process.groups import killpg
from hearthlink_trio.process.notify import NotifyReceiver
from hearthlink_trio.process.procfs import proc_stat
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
    parent: int, listen: tuple[int, list[tuple[bytes, bytes]]] | None = None
) -> None:
    # Runs in the child between fork and exec: a few system calls and nothing else that
    # could take a lock. (Joining the service's cgroup is the parent's work, after the exec:
    # done here it would make every start wait for the kernel's cgroup migration.)
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

    def join_cgroup(self) -> None:
        """Move the process, and any it has started already, into its service's cgroup (if
        its lineage has one). It runs on meanwhile: the kernel's migration, which may wait
        for a scheduler grace period, never delays its start. Until then it is found by its
        group, its ancestry and its mark, as in a run without cgroups.

        Raises:
            OSError: it cannot be moved (what is running of it is then killed and reaped).
        """
        if self.lineage is None or self.lineage.cgroup is None:
            return
        try:
            cgroups.join(self.lineage.cgroup, self.pid)
        except OSError as exc:
            killpg(self.pid, signal.SIGKILL)
            kill_all(self.processes())
            self.reap()
            self.close_streams()
            raise OSError(
                exc.errno, f"could not join the cgroup {self.lineage.cgroup}: {exc.strerror}"
            ) from None

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
            # being reused).
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


#: Where util-linux's ``setpriv`` may be (it needs 2.33 or later for ``--pdeathsig``).
_SETPRIV_NAME = "setpriv"
#: A larger file is not util-linux's setpriv (busybox's applet has no --pdeathsig).
_SETPRIV_MAX_BYTES = 1024 * 1024


@functools.cache
def _pdeathsig_wrapper() -> tuple[str, ...] | None:
    """The command that arms the parent-death signal and then executes the service, so
    that no Python code need run between fork and exec: util-linux's ``setpriv`` if this
    machine has one that knows ``--pdeathsig`` (its usage text names the option), else
    None (the child arms it itself). ``HEARTHLINK_SETPRIV=off`` turns it off."""
    if os.environ.get("HEARTHLINK_SETPRIV", "").lower() in ("off", "0", "no"):
        return None
    path = shutil.which(_SETPRIV_NAME)
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            image = f.read(_SETPRIV_MAX_BYTES + 1)
    except OSError:
        return None
    if len(image) > _SETPRIV_MAX_BYTES or b"--pdeathsig" not in image:
        return None
    return (path, "--pdeathsig", "KILL", "--")


def _check_program(program: str, env: Mapping[str, str], cwd: Path) -> None:
    """Raise what exec would raise for ``program`` (looked up on ``env``'s PATH, or
    relative to ``cwd``), so that a program that cannot start is reported as such and not
    as the exit of the wrapper that would have executed it."""
    if "\0" in program:
        raise ValueError("embedded null byte")
    if os.sep in program:
        path = Path(cwd, program)
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        if not os.access(path, os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
        return
    if shutil.which(program, path=os.pathsep.join(os.get_exec_path(env))) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def spawn_attached(argv: Sequence[str], *, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` in hearthlink's own session and process group, with its stdin, stdout
    and stderr, and the parent-death signal: a command run in the foreground for the user,
    which gets the terminal's Ctrl-C itself, as under a shell. Must be called from the trio
    main thread.

    Raises:
        OSError: the program could not be started.
    """
    return subprocess.Popen(
        list(argv),
        env=dict(env),
        preexec_fn=functools.partial(_prepare_child, os.getpid()),
        close_fds=True,
    )


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
    in its environment (and joins the service's cgroup, if it has one, with
    :meth:`Child.join_cgroup`: the caller's call, so that it can start several processes
    first and move them together). With ``listen``
    (a listening socket's fd and its name), the process gets that socket as its fd 3 with
    ``LISTEN_FDS=1``, ``LISTEN_FDNAMES=<name>`` and ``LISTEN_PID=<its own pid>``. Must be called
    from the trio main thread (see the module docstring).

    Raises:
        OSError: the program could not be started (not found, not executable, …).
    """
    uid = gid = None
    groups = None
    if user:
        account = pwd.getpwnam(user)
        uid, gid = account.pw_uid, account.pw_gid
        groups = os.getgrouplist(user, gid)
    env = dict(env)
    if lineage is not None:
        env[RUN_ENV] = lineage.run_id
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
    wrapper = None if user or listen is not None else _pdeathsig_wrapper()
    if wrapper is not None:
        _check_program(argv[0], env, cwd)
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
                preexec_fn=functools.partial(_prepare_child, os.getpid(), listen_env),
                close_fds=True,
                pass_fds=pass_fds,
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
        stdout_fd=out_r,
        stderr_fd=err_r,
        start_ticks=stat.start_ticks if (stat := proc_stat(popen.pid)) else None,
        lineage=lineage,
    )

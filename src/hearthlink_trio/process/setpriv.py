"""util-linux's ``setpriv``: the parent-death signal armed without Python in the child.

A service started as ``setpriv --pdeathsig KILL -- <program>`` arms the signal and then
executes its program in the same process, so the spawn needs no code between fork and exec
and Popen uses vfork (see ``spawn``).
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from hearthlink_trio._util import NotReadableFile, read_regular_file

#: The name looked up on PATH (util-linux 2.33 or later knows ``--pdeathsig``).
SETPRIV_NAME = "setpriv"
#: A larger file is not util-linux's setpriv (busybox's applet has no --pdeathsig).
SETPRIV_MAX_BYTES = 1024 * 1024


@functools.cache
def pdeathsig_wrapper() -> tuple[str, ...] | None:
    """The command that arms the parent-death signal and then executes the service:
    ``setpriv`` if this machine has one that knows ``--pdeathsig`` (its usage text names the
    option; read as a regular file only, so nothing on PATH can hang the first spawn), else
    None (the child arms it itself). ``HEARTHLINK_SETPRIV=off`` turns it off."""
    if os.environ.get("HEARTHLINK_SETPRIV", "").lower() in ("off", "0", "no"):
        return None
    path = shutil.which(SETPRIV_NAME)
    if path is None:
        return None
    try:
        image = read_regular_file(Path(path), limit=SETPRIV_MAX_BYTES)
    except (OSError, NotReadableFile):
        return None
    if b"--pdeathsig" not in image:
        return None
    return (path, "--pdeathsig", "KILL", "--")


def check_program(program: str, env: Mapping[str, str], cwd: Path) -> None:
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

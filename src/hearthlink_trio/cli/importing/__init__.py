"""``hearthlink import``: a Procfile, compose file or process-compose file as a config.

Each source format has its own module, which reads the file into a draft config; the
draft is written as TOML (tomlkit: its comments say, one line each, what did not carry
over) and checked against the config model. Nothing is written unless everything could be
read; the output file is created whole or not at all, and never replaces a file unless
asked to.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from hearthlink_trio.cli.importing.common import Draft, render
from hearthlink_trio.cli.importing.compose import import_compose
from hearthlink_trio.cli.importing.process_compose import import_process_compose
from hearthlink_trio.cli.importing.procfile import import_procfile

__all__ = ["SOURCES", "import_config", "write_new"]

#: The source formats, by the name the command line gives them.
SOURCES: dict[str, Callable[[Path, Path], Draft]] = {
    "procfile": import_procfile,
    "compose": import_compose,
    "process-compose": import_process_compose,
}


def import_config(source: str, path: Path, out_dir: Path) -> str:
    """The config imported from the ``source``-format file at ``path``.

    ``out_dir`` is the folder the config will live in: the files it names (an env file)
    are written relative to it.

    Raises:
        ConfigError: the file cannot be read, or nothing in it can be imported; one line
            per problem.
    """
    return render(SOURCES[source](path, out_dir.resolve()))


def write_new(text: str, output: Path, *, force: bool) -> int:
    """``text`` as the file ``output``, created whole or not at all.

    The text goes to a temporary file in the same folder first, which then takes the
    name in one step: a hard link, which fails rather than replace an existing file, or
    with ``force`` a rename over it.

    Returns:
        The exit code: 0, or 1 when the file exists (without ``force``) or cannot be
        written (the reason on stderr).
    """
    folder = output.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=folder)
    except OSError as exc:
        print(f"Cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(tmp, 0o644)
        if force:
            os.replace(tmp, output)
        else:
            os.link(tmp, output)
    except FileExistsError:
        print(f"{output} exists: give --force to replace it", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"Cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        Path(tmp).unlink(missing_ok=True)
    return 0

"""``hearthlink import procfile``: a Procfile (foreman, honcho, overmind) as a config.

Each ``name: command`` line is a service. A line using ``$PORT`` gets the port honcho
would give it (:data:`BASE_PORT` + :data:`PORT_STEP` × its index in the file), written as
``{port}`` in the command and as ``PORT`` in its environment; a line with shell syntax
runs through ``sh -c``, a plain one directly. A ``.env`` beside the Procfile becomes the
``[supervisor] env_file`` (foreman and honcho read it for every process).
"""

from __future__ import annotations

import re
from pathlib import Path

from hearthlink_trio.cli.importing.common import (
    Draft,
    check_names,
    port_placeholder,
    read_text,
    relative_to,
    service_name,
    split_command,
    uses_port_variable,
)
from hearthlink_trio.config.envfile import EnvFileError, read_env_file

#: honcho's convention: the first process gets 5000, the next 5100, and so on.
BASE_PORT = 5000
PORT_STEP = 100
#: honcho's own pattern for a process line.
_LINE = re.compile(r"^([A-Za-z0-9_-]+):\s*(.+)$")


def import_procfile(path: Path, out_dir: Path) -> Draft:
    """The draft config of the Procfile at ``path``, for a config written in ``out_dir``.

    Raises:
        ConfigError: the file cannot be read.
    """
    draft = Draft(source=path, tool="procfile")
    lines: list[tuple[int, str, str]] = []
    for number, raw in enumerate(read_text(path).splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            draft.problem(f"line {number}: not 'name: command': {line[:60]!r}")
            continue
        lines.append((number, match.group(1), match.group(2).strip()))
    names = {f"line {number}: {name}": service_name(name) for number, name, _ in lines}
    if draft.problems or not check_names(draft, names):
        return draft
    for index, (_, source, line) in enumerate(lines):
        name = service_name(source)
        table: dict[str, object] = {}
        env: dict[str, str] = {}
        if uses_port_variable(line):
            line = port_placeholder(line)
            env["PORT"] = "{port}"
        # `exec prog` only tells a shell to become prog: hearthlink runs prog directly.
        argv, _ = split_command(line.removeprefix("exec "))
        table["command"] = argv
        if env:
            table["port"] = BASE_PORT + PORT_STEP * index
            table["env"] = env
        # A Procfile says nothing of readiness: started is ready.
        table["probe"] = "none"
        if name != source:
            draft.note(name, "", f"the name {source!r} (a service name is lowercase)")
        draft.services[name] = table
    dotenv = path.parent / ".env"
    if dotenv.is_file():
        try:
            read_env_file(dotenv)
        except EnvFileError as exc:
            draft.problem(f".env: {exc}")
        else:
            draft.supervisor["env_file"] = relative_to(dotenv, out_dir)
    return draft

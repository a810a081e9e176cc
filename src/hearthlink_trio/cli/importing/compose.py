"""``hearthlink import compose``: a compose file's services as a config.

Containers do not exist here: a service runs its ``entrypoint`` + ``command`` on this
machine. A service with only an ``image`` has no program to run and is refused, with the
line that would run its image through docker. What a container gives (volumes,
networks, a build) has no equivalent and is named in a ``# not imported`` line.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from hearthlink_trio.cli.importing.common import (
    Draft,
    check_names,
    env_pairs,
    parse_duration,
    profile_names,
    read_yaml_mapping,
    relative_to,
    service_name,
    signal_name,
    split_command,
)
from hearthlink_trio.config.model import RESERVED_VARIABLES

_CONDITIONS = {
    "service_started": "started",
    "service_healthy": "healthy",
    "service_completed_successfully": "completed",
}
_RESTART = {"no": "never", "always": "always", "unless-stopped": "always"}
#: compose healthcheck field -> [health] key, and whether it is a count.
_HEALTH_KEYS = {
    "interval": "steady_interval",
    "timeout": "timeout",
    "start_period": "startup_period",
    "start_interval": "startup_interval",
}
_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgKMG]?)[bB]?$")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]"}
_FAIL_SUFFIX = re.compile(r"\s*\|\|\s*exit\s+1\s*$")
#: Top-level keys that mean nothing here, and why.
_CONTAINER_ONLY = "hearthlink runs processes on this machine, without containers"
_FILE_KEYS_IGNORED = {"version", "name"}
_REASONS = {
    "build": "hearthlink runs the command on this machine; build the program first",
    "volumes": "the process sees this machine's files directly",
    "networks": "the services reach each other on loopback, by their ports",
    "user": 'a container\'s user; set user = "name" by hand (hearthlink runs as root only)',
    "container_name": _CONTAINER_ONLY,
    "expose": "ports are reached on loopback, there is nothing to expose",
}
#: Service keys mapped below: anything else gets a note.
_MAPPED = {
    "command",
    "entrypoint",
    "image",
    "environment",
    "env_file",
    "ports",
    "healthcheck",
    "depends_on",
    "deploy",
    "stop_signal",
    "stop_grace_period",
    "working_dir",
    "restart",
    "post_start",
    "pre_stop",
    "mem_limit",
    "profiles",
}


def _unescape(text: str) -> str:
    # compose writes a literal dollar as $$.
    return text.replace("$$", "$")


def _interpolates(text: str) -> bool:
    return re.search(r"\$(\{|[A-Za-z_])", text.replace("$$", "")) is not None


def _argv(value: Any) -> list[str] | None:
    """A compose command: a list, or a string split as compose splits it (no shell)."""
    if isinstance(value, str):
        try:
            return [_unescape(word) for word in shlex.split(value)]
        except ValueError:
            return None
    if isinstance(value, list) and all(isinstance(word, str | int | float) for word in value):
        return [_unescape(str(word)) for word in value]
    return None


def _port(value: Any) -> tuple[int | None, int | None]:
    """The host side and the container side of one ``ports`` entry (None: not given)."""
    if isinstance(value, dict):
        target, published = value.get("target"), value.get("published")
        return _number(published), _number(target)
    text = str(value).split("/", 1)[0]
    if text.startswith("["):  # "[::1]:8080:80"
        text = text.split("]:", 1)[-1]
    parts = text.rsplit(":", 2)[-2:] if ":" in text else [text]
    if len(parts) == 1:
        return None, _number(parts[0])
    return _number(parts[0]), _number(parts[1])


def _port_word(word: str, port: int) -> str:
    """``word`` with ``port`` written as ``{port}`` where it names the port alone."""
    number = str(port)
    if word == number:
        return "{port}"
    for sep in (":", "="):
        if word.endswith(sep + number):
            return word[: -len(number)] + "{port}"
    return word


def _number(value: Any) -> int | None:
    try:
        port = int(str(value))
    except ValueError:
        return None
    return port if 1 <= port <= 65535 else None


def _http_url(argv: list[str]) -> str | None:
    """The URL of a ``curl -f URL`` or ``wget URL`` check of this machine, or None."""
    if not argv:
        return None
    program = PurePosixPath(argv[0]).name
    urls = [word for word in argv[1:] if word.startswith(("http://", "https://"))]
    if len(urls) != 1 or program not in ("curl", "wget"):
        return None
    if program == "curl" and not any(
        word == "--fail" or (word.startswith("-") and not word.startswith("--") and "f" in word)
        for word in argv[1:]
    ):
        return None  # without -f, curl passes on an error status too
    parts = urlsplit(urls[0])
    if parts.scheme != "http" or parts.hostname not in _LOCAL_HOSTS:
        return None
    return urls[0]


def _probe(test: Any) -> tuple[Any, int | None, str]:
    """The probe of a healthcheck ``test``, the port an http probe needs, and a note.

    The probe is "none", an ``{ http = ... }`` table or an ``{ exec = [...] }`` table,
    or None when the test cannot be read (the note says why).
    """
    shell: str | None = None
    argv: list[str] | None = None
    if isinstance(test, str):
        shell = test
    elif isinstance(test, list) and test and all(isinstance(part, str) for part in test):
        head, rest = test[0], [_unescape(part) for part in test[1:]]
        if head == "NONE":
            return "none", None, ""
        if head == "CMD" and rest:
            argv = rest
        elif head == "CMD-SHELL" and rest:
            shell = " ".join(rest)
    if shell is not None:
        shell = _unescape(shell)
        line = _FAIL_SUFFIX.sub("", shell)
        words, needs_shell = split_command(line)
        argv = words if not needs_shell else ["sh", "-c", shell]
        with contextlib.suppress(ValueError):
            # A URL's "?" is no glob to the check: a curl of this machine is read as one.
            if _http_url(shlex.split(line)) is not None:
                argv = shlex.split(line)
    if not argv:
        return None, None, f"test {test!r} is not CMD, CMD-SHELL or NONE"
    url = _http_url(argv)
    if url is not None:
        parts = urlsplit(url)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return {"http": path, "json": False}, parts.port or 80, ""
    return {"exec": argv}, None, ""


def _tasks(services: dict[str, Any]) -> set[str]:
    """The services another waits on to complete: they run once, as tasks."""
    out = set()
    for svc in services.values():
        depends = svc.get("depends_on") if isinstance(svc, dict) else None
        if isinstance(depends, dict):
            for dep, spec in depends.items():
                if isinstance(spec, dict) and spec.get("condition") == (
                    "service_completed_successfully"
                ):
                    out.add(str(dep))
    return out


def import_compose(path: Path, out_dir: Path) -> Draft:
    """The draft config of the compose file at ``path``, for a config written in ``out_dir``.

    Raises:
        ConfigError: the file cannot be read or is not a YAML mapping.
    """
    draft = Draft(source=path, tool="compose")
    data = read_yaml_mapping(path)
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        draft.problem("services: no services to import")
        return draft
    for key, value in data.items():
        if key == "services" or key in _FILE_KEYS_IGNORED or key.startswith("x-") or not value:
            continue
        draft.file_notes.append(f"{key}: {_CONTAINER_ONLY}")
    names = {str(src): service_name(str(src)) for src in services}
    if not check_names(draft, names):
        return draft
    tasks = {names[dep] for dep in _tasks(services) if dep in names}
    tables: dict[str, dict[str, Any]] = {}
    for src, svc in services.items():
        name = names[str(src)]
        if not isinstance(svc, dict):
            draft.note(name, "", "not a mapping")
            continue
        table = _service(draft, name, svc, path.parent, out_dir, is_task=name in tasks)
        if table is not None:
            tables[name] = table
    for src, svc in services.items():
        name = names[str(src)]
        if name in tables and isinstance(svc, dict) and "depends_on" in svc:
            _depends(draft, name, svc["depends_on"], names, tables, tables[name])
    for name, table in tables.items():
        draft.services[name] = table
    return draft


def _service(
    draft: Draft, name: str, svc: dict[str, Any], base: Path, out_dir: Path, *, is_task: bool
) -> dict[str, Any] | None:
    """One compose service as a table, or None when it cannot run here (noted why)."""
    image = svc.get("image")
    entrypoint = _argv(svc["entrypoint"]) if svc.get("entrypoint") is not None else []
    command = _argv(svc["command"]) if svc.get("command") is not None else []
    if entrypoint is None or command is None:
        draft.note(name, "command", "neither a string nor a list of strings")
        return None
    argv = [*entrypoint, *command]
    if not argv:
        if isinstance(image, str) and image:
            run = ["docker", "run", "--rm", "--init", "--name", name]
            ports = svc.get("ports")
            for entry in ports if isinstance(ports, list) else []:
                host, container = _port(entry)
                if container is not None:
                    run += ["-p", f"127.0.0.1:{host or container}:{container}"]
            run.append(image)
            line = "command = [" + ", ".join(f'"{word}"' for word in run) + "]"
            draft.note(
                name,
                "",
                f"only an image ({image}): hearthlink runs programs, not images; give the "
                f"program to run, or write {line}",
            )
        else:
            draft.note(name, "", "no command to run (neither command nor entrypoint)")
        return None
    table: dict[str, Any] = {}
    if is_task:
        table["kind"] = "task"
    table["command"] = argv
    if any(_interpolates(word) for word in argv):
        draft.note(
            name,
            "command",
            "compose would substitute its ${VARIABLES} from the shell or .env; "
            "hearthlink passes them as written",
        )
    if isinstance(image, str) and image:
        table["image"] = image
    _ports(draft, name, svc.get("ports"), table)
    if "port" in table:
        # Replicas here share one machine, so each needs its own port: {port} is each
        # replica's (the table's own port for the first).
        table["command"] = [_port_word(word, table["port"]) for word in argv]
    if "healthcheck" in svc:
        _healthcheck(draft, name, svc["healthcheck"], table, is_task=is_task)
    if not is_task and "probe" not in table:
        # Without a healthcheck compose counts a running container as healthy.
        table["probe"] = "none"
    _environment(draft, name, svc, base, out_dir, table)
    _lifecycle(draft, name, svc, table)
    for key in svc:
        if key in _MAPPED or key.startswith("x-"):
            continue
        draft.note(name, key, _REASONS.get(key, f"no equivalent: {_CONTAINER_ONLY}"))
    return table


def _ports(draft: Draft, name: str, ports: Any, table: dict[str, Any]) -> None:
    if ports is None:
        return
    if not isinstance(ports, list):
        draft.note(name, "ports", "not a list")
        return
    for n, entry in enumerate(ports):
        host, container = _port(entry)
        port = host or container
        if n == 0 and port is not None:
            table["port"] = port
        else:
            why = "a port range" if port is None else "hearthlink gives a service one port"
            draft.note(name, f"ports[{n}]", f"{entry!r}: {why}")


def _healthcheck(
    draft: Draft, name: str, check: Any, table: dict[str, Any], *, is_task: bool
) -> None:
    if not isinstance(check, dict):
        draft.note(name, "healthcheck", "not a mapping")
        return
    if is_task:
        draft.note(name, "healthcheck", "a task is not probed: it is done when it exits 0")
        return
    if check.get("disable") is True:
        table["probe"] = "none"
        return
    if "test" not in check:
        draft.note(name, "healthcheck", "no test (the image's own HEALTHCHECK is not known)")
        return
    probe, port, why = _probe(check["test"])
    if probe is None:
        draft.note(name, "healthcheck.test", why)
        return
    if isinstance(probe, dict) and "http" in probe:
        if "port" not in table:
            table["port"] = port
        elif table["port"] != port:
            # The check runs inside the container, on the container's port: as written
            # it checks what the program serves, whatever port hearthlink gives it.
            probe = {"exec": _probe_argv(check["test"])}
    table["probe"] = probe
    for key, value in check.items():
        if key in _HEALTH_KEYS:
            seconds = parse_duration(value)
            if seconds is None or seconds <= 0:
                draft.note(name, f"healthcheck.{key}", f"{value!r} is not a positive duration")
            else:
                draft.set_shared("health", _HEALTH_KEYS[key], seconds, name, f"healthcheck.{key}")
        elif key == "retries":
            if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                draft.set_shared("health", "failure_threshold", value, name, "healthcheck.retries")
            else:
                draft.note(name, "healthcheck.retries", f"{value!r} is not a count of 1 or more")
        elif key not in ("test", "disable"):
            draft.note(name, f"healthcheck.{key}", "no equivalent")


def _probe_argv(test: Any) -> list[str]:
    if isinstance(test, list) and test[0] == "CMD":
        return [_unescape(part) for part in test[1:]]
    shell = test if isinstance(test, str) else " ".join(test[1:])
    return ["sh", "-c", _unescape(shell)]


def _environment(
    draft: Draft, name: str, svc: dict[str, Any], base: Path, out_dir: Path, table: dict[str, Any]
) -> None:
    if "working_dir" in svc:
        folder = svc["working_dir"]
        if isinstance(folder, str) and folder:
            table["cwd"] = folder
        else:
            draft.note(name, "working_dir", "not a folder name")
    values, bad = env_pairs(svc.get("environment"))
    for key in bad:
        draft.note(name, f"environment.{key}", "not a string, number or boolean")
    env: dict[str, str] = {}
    for key, value in values.items():
        if value is None:
            draft.note(
                name,
                f"environment.{key}",
                "no value (compose passes the shell's): set it in the supervisor's environment",
            )
        elif key in RESERVED_VARIABLES or (key.startswith("HEARTHLINK_") and key.endswith("_URL")):
            draft.note(name, f"environment.{key}", "set by hearthlink itself")
        elif _interpolates(value):
            draft.note(
                name,
                f"environment.{key}",
                "uses compose's ${VARIABLE} substitution; set it in the supervisor's "
                "environment or an env_file instead",
            )
        else:
            env[key] = _unescape(value)
    if env:
        table["env"] = env
    files = svc.get("env_file")
    if files is None:
        return
    entries = files if isinstance(files, list) else [files]
    kept = False
    for n, entry in enumerate(entries):
        where = "env_file" if not isinstance(files, list) else f"env_file[{n}]"
        file, required = (
            (entry.get("path"), entry.get("required", True))
            if isinstance(entry, dict)
            else (entry, True)
        )
        if not isinstance(file, str):
            draft.note(name, where, "not a file name")
            continue
        if not (base / file).is_file():
            draft.note(name, where, f"{file}: file not found" + ("" if required else " (optional)"))
        elif kept:
            draft.note(name, where, f"{file}: one env_file per service; merge it into the first")
        else:
            table["env_file"] = relative_to(base / file, out_dir)
            kept = True


def _lifecycle(draft: Draft, name: str, svc: dict[str, Any], table: dict[str, Any]) -> None:
    deploy = svc.get("deploy")
    if isinstance(deploy, dict):
        for key, value in deploy.items():
            if key == "replicas" and isinstance(value, int) and 1 <= value <= 1000:
                if value > 1:
                    table["replicas"] = value
            elif key == "resources" and isinstance(value, dict):
                _resources(draft, name, value, table)
            else:
                draft.note(name, f"deploy.{key}", "no equivalent")
    elif deploy is not None:
        draft.note(name, "deploy", "not a mapping")
    if "profiles" in svc:
        profiles = profile_names(draft, name, "profiles", svc["profiles"])
        if profiles:
            table["profiles"] = profiles
    if "mem_limit" in svc:
        _memory(draft, name, "mem_limit", svc["mem_limit"], table)
    if "stop_signal" in svc:
        signame = signal_name(svc["stop_signal"])
        if signame is None:
            draft.note(name, "stop_signal", f"{svc['stop_signal']!r} is not a signal")
        else:
            table["stop_signal"] = signame
    if "stop_grace_period" in svc:
        seconds = parse_duration(svc["stop_grace_period"])
        if seconds is None:
            draft.note(name, "stop_grace_period", f"{svc['stop_grace_period']!r} is no duration")
        else:
            table["stop_timeout"] = seconds
    for hook in ("post_start", "pre_stop"):
        if hook in svc:
            _hook(draft, name, hook, svc[hook], table)
    policy = svc.get("restart")
    if policy is None:
        return
    # YAML 1.1 reads an unquoted no as false.
    text = "no" if policy is False else str(policy)
    if text in _RESTART:
        table["restart"] = _RESTART[text]
    elif text.startswith("on-failure"):
        table["restart"] = "on-failure"
        count = text.partition(":")[2]
        if count.isdigit():
            draft.set_shared("restart", "max_attempts", int(count), name, "restart")
    else:
        draft.note(name, "restart", f"unknown policy {text!r}")


def _resources(draft: Draft, name: str, value: dict[str, Any], table: dict[str, Any]) -> None:
    for key, item in value.items():
        if key == "limits" and isinstance(item, dict):
            for limit, amount in item.items():
                where = f"deploy.resources.limits.{limit}"
                if limit == "memory":
                    _memory(draft, name, where, amount, table)
                else:
                    draft.note(name, where, "hearthlink limits memory only")
        else:
            draft.note(name, f"deploy.resources.{key}", "hearthlink limits memory only")


def _memory(draft: Draft, name: str, where: str, value: Any, table: dict[str, Any]) -> None:
    """A compose memory size (``512m``, ``1gb``, bytes) as ``max_memory``."""
    text = str(value).strip() if isinstance(value, int | str) else ""
    match = _MEMORY.match(text) if not isinstance(value, bool) else None
    if match is None:
        draft.note(name, where, f"{value!r} is not a size hearthlink reads (K, M, G or bytes)")
        return
    size = match.group(1) + match.group(2).upper()
    if "max_memory" in table and table["max_memory"] != size:
        draft.note(name, where, f"{value!r} differs from the limit {table['max_memory']!r} taken")
        return
    table["max_memory"] = size


def _hook(draft: Draft, name: str, hook: str, value: Any, table: dict[str, Any]) -> None:
    """A compose lifecycle hook: its first command becomes the service's hook."""
    hooks = value if isinstance(value, list) else [value]
    for n, entry in enumerate(hooks):
        where = f"{hook}[{n}]"
        argv = _argv(entry.get("command")) if isinstance(entry, dict) else None
        if not argv:
            draft.note(name, where, "no command")
        elif hook in table:
            draft.note(name, where, "one hook of each kind per service")
        else:
            table[hook] = argv
            for key in entry:
                if key != "command":
                    draft.note(name, f"{where}.{key}", "a hook runs as the service does")


def _depends(
    draft: Draft,
    name: str,
    depends: Any,
    names: dict[str, str],
    tables: dict[str, dict[str, Any]],
    table: dict[str, Any],
) -> None:
    specs: dict[str, Any]
    if isinstance(depends, list):
        specs = {str(dep): {"condition": "service_started"} for dep in depends}
    elif isinstance(depends, dict):
        specs = {str(dep): spec for dep, spec in depends.items()}
    else:
        draft.note(name, "depends_on", "neither a list nor a mapping")
        return
    out: dict[str, Any] = {}
    for src, spec in specs.items():
        dep = names.get(src)
        if dep is None or dep not in tables:
            why = "not a service of this file" if dep is None else "that service is not imported"
            draft.note(name, f"depends_on.{src}", why)
            continue
        spec = spec if isinstance(spec, dict) else {}
        condition = _CONDITIONS.get(str(spec.get("condition", "service_started")))
        if condition is None:
            draft.note(name, f"depends_on.{src}", f"unknown condition {spec.get('condition')!r}")
            continue
        if spec.get("restart") is True:
            out[dep] = {"condition": condition, "restart": True}
        else:
            out[dep] = condition
        if spec.get("required") is False:
            draft.note(name, f"depends_on.{src}.required", "a dependency here is always required")
        for key in spec:
            if key not in ("condition", "restart", "required"):
                draft.note(name, f"depends_on.{src}.{key}", "no equivalent")
    if out:
        table["depends_on"] = out

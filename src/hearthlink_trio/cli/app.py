"""The ``hearthlink`` command line.

``run`` is a plain (sync) command that calls ``trio.run`` itself, so the exit code and the
signal handling are ours, not the argument parser's. Every :class:`HearthlinkError` is
reported here and mapped to its exit code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from cyclopts import App, Parameter

from hearthlink_trio import __version__
from hearthlink_trio.cli.runcmd import report as _report
from hearthlink_trio.cli.runcmd import run_command
from hearthlink_trio.cli.target import locate_supervisor as _locate
from hearthlink_trio.cli.target import target as _target
from hearthlink_trio.config.lookup import config_paths
from hearthlink_trio.errors import ExitCode, HearthlinkError

if TYPE_CHECKING:
    from hearthlink_trio.config import Config

app = App(
    name="hearthlink",
    version=__version__,
    help="A structured-concurrency process supervisor for the Hearthlink services.",
)

ConfigOption = Annotated[
    list[Path] | None,
    Parameter(
        name="--config",
        negative_iterable=(),
        help=(
            "Config file (default: $HEARTHLINK_CONFIG, else the bundled four-service config); "
            "repeat it to merge later files onto earlier ones. A hearthlink.override.toml "
            "beside the first is merged right after it."
        ),
    ),
]


def _load(config: list[Path] | None) -> Config:
    from hearthlink_trio.config.load import load_config

    return load_config(config_paths(config))


@app.command
def run(
    *names: str,
    config: ConfigOption = None,
    log_format: Annotated[
        Literal["human", "json"],
        Parameter(help="Supervisor events on stderr as text or JSON lines."),
    ] = "human",
    profile: Annotated[
        list[str] | None,
        Parameter(
            name="--profile",
            negative_iterable=(),
            help="Start the services of this profile too (repeatable).",
        ),
    ] = None,
    watch: Annotated[
        bool, Parameter(help="Restart a service when its watched files change.")
    ] = True,
    wait_timeout: Annotated[
        float,
        Parameter(help="With -- CMD: how long the services may take to get healthy (seconds)."),
    ] = 60.0,
) -> int:
    """Start the services of the config (NAMES: only those and what they depend on) and
    supervise them until Ctrl-C or SIGTERM.

    With ``-- CMD ARG…`` at the end: once the services are healthy, run CMD in the
    foreground with their environment, then stop them and exit with CMD's exit code.
    """
    return run_command(
        names=names,
        config=config,
        log_format=log_format,
        profiles=profile or (),
        watch=watch,
        wait_timeout=wait_timeout,
        command=_COMMAND,
        exit_at_once=_EXIT_AT_ONCE,
    )


@app.command
def check(*, config: ConfigOption = None) -> int:
    """Validate the config and run the preflight checks; start nothing."""
    from hearthlink_trio.config.cache import store
    from hearthlink_trio.supervisor.output import setup_event_log
    from hearthlink_trio.supervisor.preflight import preflight

    try:
        cfg = _load(config)
        store(cfg, os.environ)  # the next `run` of this file starts without the file model
        preflight(cfg, setup_event_log("human"), keep_lock=False)
    except HearthlinkError as exc:
        return _report(exc)
    print(f"{cfg.path}: OK, {len(cfg.services)} service(s) ready to start")
    return 0


@app.command(name="config")
def show_config(*, config: ConfigOption = None) -> int:
    """Print the merged, validated config as TOML (every key with the value in effect)."""
    from hearthlink_trio.config.load import read_model
    from hearthlink_trio.config.render import render_toml

    paths = config_paths(config)
    try:
        _load(config)  # every check, the ones across keys and of this machine too
        parsed, _, _ = read_model(paths)
    except HearthlinkError as exc:
        return _report(exc)
    print(render_toml(parsed), end="")
    return 0


@app.command
def status(
    *,
    config: ConfigOption = None,
    json: Annotated[bool, Parameter(help="Print the control API's JSON object.")] = False,
    watch: Annotated[
        bool, Parameter(help="Redraw the table on every change until Ctrl-C.")
    ] = False,
) -> int:
    """Show the state of the running supervisor's services (exit 1 if none is running)."""
    from hearthlink_trio.cli.statuscmd import show_status

    return show_status(config, as_json=json, watch=watch)


def _service_request(config: list[Path] | None, name: str, action: str) -> int:
    """``restart``/``stop``/``start`` of one service through the control API."""
    from hearthlink_trio.control.errors import ControlError

    _, client = _target(config)
    requests = {
        "restart": client.restart,
        "stop": client.stop_service,
        "start": client.start_service,
    }
    try:
        answer = requests[action](name)
    except ControlError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"{action.capitalize()} of {name} requested: {answer.get('result', 'accepted')}")
    return 0


@app.command
def restart(name: str, /, *, config: ConfigOption = None) -> int:
    """Restart service NAME now (a failed one gets its restart count reset)."""
    return _service_request(config, name, "restart")


@app.command
def start(name: str, /, *, config: ConfigOption = None) -> int:
    """Start service NAME again after `hearthlink stop NAME`, or one the run left out (with
    what it needs that was left out too)."""
    return _service_request(config, name, "start")


#: How long `hearthlink wait` waits by default.
DEFAULT_WAIT_TIMEOUT = 60.0


@app.command
def wait(
    *names: str,
    config: ConfigOption = None,
    timeout: Annotated[
        float, Parameter(help="Give up after this many seconds (exit 1, naming the laggards).")
    ] = DEFAULT_WAIT_TIMEOUT,
) -> int:
    """Wait until the running supervisor's services NAME… (else all) are healthy (a task:
    completed); exit 1 at the timeout, when one gives up, or if no supervisor runs."""
    from hearthlink_trio.control.errors import ControlError

    if timeout < 0:
        print("--timeout must be 0 or more", file=sys.stderr)
        return 2
    _, client = _target(config)
    try:
        result = client.wait_ready(names, timeout=timeout)
    except ControlError as exc:
        print(exc, file=sys.stderr)
        return 1
    if result.ready:
        print(f"Ready: {result.describe()}")
        return 0
    if result.gave_up:
        print(f"A service gave up: {result.describe()}", file=sys.stderr)
    else:
        print(f"Not ready after {timeout:g}s: {result.describe()}", file=sys.stderr)
    return 1


@app.command
def mcp(*, config: ConfigOption = None) -> int:
    """A Model Context Protocol server on stdio for the running supervisor (for coding
    agents): tools status, logs, events, restart, stop, start, wait."""
    # The SDK is imported by this command only: `run` and the other commands never load it.
    import contextlib

    from hearthlink_trio.cli.mcpserver import build_server
    from hearthlink_trio.control.client import ControlClient

    cfg, where = _locate(config)
    client = ControlClient(where.control_socket, data_dir=where.data_dir)
    # Ctrl-C where it was started by hand is a normal end, like stdin closing.
    with contextlib.suppress(KeyboardInterrupt):
        build_server(client, cfg, where.log_dir).run("stdio")
    return 0


#: How long `hearthlink stop` waits for a supervisor whose config does not load (its stop
#: timeouts are unknown then).
DEFAULT_STOP_WAIT = 60.0


@app.command
def stop(name: str | None = None, /, *, config: ConfigOption = None) -> int:
    """Stop service NAME and keep it stopped; with no NAME, stop the running supervisor
    gracefully and wait until it has exited."""
    from hearthlink_trio.control.errors import ControlError
    from hearthlink_trio.systemd.unit import STOP_TIMEOUT_MARGIN

    if name is not None:
        return _service_request(config, name, "stop")
    cfg, client = _target(config)
    try:
        client.shutdown()
    except ControlError as exc:
        print(exc, file=sys.stderr)
        return 1
    limit = (cfg.worst_case_stop_seconds() if cfg else DEFAULT_STOP_WAIT) + STOP_TIMEOUT_MARGIN
    if not client.wait_gone(limit):
        print(f"The supervisor is still stopping after {limit:g}s", file=sys.stderr)
        return 1
    print("Stopped")
    return 0


@app.command
def ui(*, config: ConfigOption = None) -> int:
    """A live full-screen view of the running supervisor (q quits; the supervisor goes on)."""
    from hearthlink_trio.cli.ui import run_ui

    _, where = _locate(config)
    return run_ui(where.control_socket, where.log_dir)


@app.command
def logs(
    name: str,
    /,
    *,
    config: ConfigOption = None,
    follow: Annotated[
        bool, Parameter(name=["--follow", "-f"], help="Keep printing new lines (across rotation).")
    ] = False,
    lines: Annotated[int, Parameter(name=["--lines", "-n"], help="How many last lines.")] = 20,
) -> int:
    """Print the last lines of service NAME's log file, and follow it with -f. For a
    replicated table, every replica's lines, each prefixed with the replica's name."""
    from hearthlink_trio.cli.logview import follow as follow_lines
    from hearthlink_trio.cli.logview import tail_lines

    cfg, where = _locate(config)
    replicas: list[str] = []
    if cfg is not None and name not in cfg.names:
        replicas = [svc.name for svc in cfg.group(name)]
        if not replicas:
            print(
                f"No service named {name!r} in {cfg.path} (services: {', '.join(cfg.names)})",
                file=sys.stderr,
            )
            return 1
    log_dir = where.log_dir
    path = log_dir / f"{name}.log"
    if lines < 0:
        print("--lines must be 0 or more", file=sys.stderr)
        return 2
    if replicas:
        return _replica_logs(name, {r: log_dir / f"{r}.log" for r in replicas}, follow, lines)
    if not follow:
        try:
            text = tail_lines(path, lines)
        except FileNotFoundError:
            print(f"No log yet for {name} ({path})", file=sys.stderr)
            return 1
        for line in text:
            print(line)
        return 0
    try:
        for line in follow_lines(path, last=lines):
            print(line, flush=True)
    except KeyboardInterrupt:
        return 0
    return 0


def _replica_logs(table: str, paths: dict[str, Path], follow: bool, lines: int) -> int:
    """``hearthlink logs TABLE`` of a replicated table: its replicas' lines interleaved."""
    from hearthlink_trio.cli.logview import follow_many, tail_many

    if not follow:
        if not any(path.exists() for path in paths.values()):
            print(
                f"No log yet for {table} ({', '.join(map(str, paths.values()))})", file=sys.stderr
            )
            return 1
        for line in tail_many(paths, lines):
            print(line)
        return 0
    try:
        for line in follow_many(paths, last=lines):
            print(line, flush=True)
    except KeyboardInterrupt:
        return 0
    return 0


@app.command
def systemd(
    *,
    config: ConfigOption = None,
    install: Annotated[bool, Parameter(help="Write it to ~/.config/systemd/user/.")] = False,
) -> int:
    """Print the systemd user unit for this installation (or install it)."""
    from hearthlink_trio.systemd.unit import (
        default_exec_start,
        enable_commands,
        install_unit,
        render_unit,
    )

    try:
        cfg = _load(config)
    except HearthlinkError as exc:
        return _report(exc)
    explicit = config is not None or bool(os.environ.get("HEARTHLINK_CONFIG"))
    try:
        text = render_unit(
            exec_start=default_exec_start(),
            config_path=cfg.files if explicit else None,
            data_dir=cfg.data_dir,
            stop_timeout_worst=cfg.worst_case_stop_seconds(),
        )
    except ValueError as exc:
        print(f"hearthlink systemd: {exc}", file=sys.stderr)
        return 1
    if not install:
        print(text, end="")
        return 0
    path = install_unit(text)
    print(f"Wrote {path}. Enable and start it with:")
    for command in enable_commands(path):
        print(f"  {command}")
    return 0


vault_app = App(name="vault", help="Vault maintenance.")
app.command(vault_app)


@vault_app.command(name="rotate-key")
def rotate_key(*, config: ConfigOption = None) -> int:
    """Re-encrypt every Vault record under a new key (stop the supervisor first)."""
    from hearthlink_trio.services.vault.keys import rotate_key as rotate
    from hearthlink_trio.supervisor.preflight import acquire_lock

    try:
        cfg = _load(config)
        lock = acquire_lock(cfg.run_dir)
    except HearthlinkError as exc:
        return _report(exc)
    try:
        env_key = os.environ.get("HEARTHLINK_VAULT_KEY") or None
        new_key = rotate(cfg.data_dir, current_key=env_key)
    except ValueError as exc:
        print(f"vault rotate-key: {exc}", file=sys.stderr)
        return 1
    finally:
        lock.release()
    if env_key:
        print("Vault re-encrypted. Set this new key in HEARTHLINK_VAULT_KEY before the next start:")
        print(new_key)
    else:
        print(f"Vault re-encrypted; the new key is in {cfg.data_dir / 'vault.key'}")
    return 0


export_app = App(
    name="export",
    help="The config as a compose file or Kubernetes manifests, or the services' Dockerfile.",
)
app.command(export_app)

OutputOption = Annotated[
    Path | None,
    Parameter(name=["--output", "-o"], help="Write to this file (default: standard output)."),
]


@export_app.command(name="compose")
def export_compose(*, config: ConfigOption = None, output: OutputOption = None) -> int:
    """The config as a compose file (`docker compose up`); exit 2 if it cannot be."""
    from hearthlink_trio.cli.export import export_compose as render
    from hearthlink_trio.cli.export import write_output

    try:
        text = render(config_paths(config))
    except HearthlinkError as exc:
        return _report(exc)
    return write_output(text, output)


@export_app.command(name="kubernetes")
def export_kubernetes(
    *,
    config: ConfigOption = None,
    output: OutputOption = None,
    namespace: Annotated[
        str | None, Parameter(help="Put everything in this namespace (and create it).")
    ] = None,
    kubectl_image: Annotated[
        str | None,
        Parameter(
            help="The image (with sh and kubectl) whose init containers wait for a task's Job "
            "(default: bitnami/kubectl:1.30)."
        ),
    ] = None,
) -> int:
    """The config as Kubernetes manifests (`kubectl apply -f`); exit 2 if it cannot be."""
    from hearthlink_trio.cli.export import KUBECTL_IMAGE, write_output
    from hearthlink_trio.cli.export import export_kubernetes as render

    try:
        text = render(
            config_paths(config), namespace=namespace, kubectl_image=kubectl_image or KUBECTL_IMAGE
        )
    except HearthlinkError as exc:
        return _report(exc)
    return write_output(text, output)


@export_app.command(name="dockerfile")
def export_dockerfile(*, output: OutputOption = None) -> int:
    """The Dockerfile of the image that runs the bundled services."""
    from hearthlink_trio.cli.export import render_dockerfile, write_output

    return write_output(render_dockerfile(), output)


import_app = App(
    name="import",
    help="A config that runs what a Procfile, compose file or process-compose file runs.",
)
app.command(import_app)

ImportSource = Annotated[Path, Parameter(help="The file to import.")]
ImportForce = Annotated[
    bool, Parameter(name="--force", negative="", help="Replace the output file if it exists.")
]


def _import(source: str, file: Path, output: Path | None, force: bool) -> int:
    from hearthlink_trio.cli.export import write_output
    from hearthlink_trio.cli.importing import import_config, write_new

    out_dir = Path.cwd() if output is None else output.parent
    try:
        text = import_config(source, file, out_dir)
    except HearthlinkError as exc:
        return _report(exc)
    if output is None:
        return write_output(text, None)
    code = write_new(text, output, force=force)
    if code == 0:
        notes = sum(line.startswith("# not imported: ") for line in text.splitlines())
        print(f"{output}: written; {notes} thing(s) not imported, each named in a comment")
        print(f"Next: hearthlink check --config {output}")
    return code


@import_app.command(name="procfile")
def import_procfile(
    file: ImportSource, /, *, output: OutputOption = None, force: ImportForce = False
) -> int:
    """A Procfile's processes (foreman, honcho, overmind); exit 2 if none can be read."""
    return _import("procfile", file, output, force)


@import_app.command(name="compose")
def import_compose(
    file: ImportSource, /, *, output: OutputOption = None, force: ImportForce = False
) -> int:
    """A compose file's services, run as processes here; exit 2 if none can be."""
    return _import("compose", file, output, force)


@import_app.command(name="process-compose")
def import_process_compose(
    file: ImportSource, /, *, output: OutputOption = None, force: ImportForce = False
) -> int:
    """A process-compose file's processes; exit 2 if none can be read."""
    return _import("process-compose", file, output, force)


#: Set by main(): only the real program exits at once, not a test calling run() in-process.
_EXIT_AT_ONCE = False
#: ``hearthlink run … -- CMD ARG…``: the command, split off by main() (the argument parser
#: would take its words for service names and its options for run's).
_COMMAND: tuple[str, ...] = ()


def main() -> int:
    """The console script: run the command line and return its exit code.

    A usage error is exit 2 (cyclopts' ``exit_on_error``); a command's returned int is the
    exit code, given back here rather than left to cyclopts to pass to ``sys.exit``.
    """
    global _EXIT_AT_ONCE, _COMMAND
    _EXIT_AT_ONCE = True
    args = sys.argv[1:]
    if args[:1] == ["run"] and "--" in args:
        cut = args.index("--")
        args, _COMMAND = args[:cut], tuple(args[cut + 1 :])
        if not _COMMAND:
            print("hearthlink run: give a command after --", file=sys.stderr)
            return ExitCode.CONFIG
    result = app(args, result_action="return_value", exit_on_error=True)
    return result if isinstance(result, int) else ExitCode.OK

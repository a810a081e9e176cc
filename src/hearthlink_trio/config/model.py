"""The config file's model: every table and key, its type, default and bounds.

Unknown keys are refused (``extra="forbid"``), so a typo is reported instead of ignored.
Cross-key checks (unique ports, known dependencies, files that must exist) are made by
:mod:`hearthlink_trio.config.load`, which turns this model into a resolved
:class:`~hearthlink_trio.config.resolved.Config`.
"""

from __future__ import annotations

import json
import math
import re
import signal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    field_validator,
    model_validator,
)

#: The longest service name: a DNS label's limit, as Kubernetes and compose names have.
MAX_NAME_CHARS = 63
#: Patterns are matched with ``fullmatch`` (``$`` alone would let a trailing newline in).
SERVICE_NAME_RE = re.compile(rf"[a-z][a-z0-9_-]{{0,{MAX_NAME_CHARS - 1}}}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
PROFILE_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SECRET_FILE_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
#: A TOML key that needs no quotes.
BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
#: Variables the supervisor gives every service; a secret cannot take their name.
RESERVED_VARIABLES = frozenset(
    {
        "HEARTHLINK_DATA_DIR",
        "HEARTHLINK_SERVICE",
        "HEARTHLINK_API_TOKEN",
        "HEARTHLINK_CONFIG",
        "PYTHONPATH",
    }
)
#: Variables that change which program runs or how it is loaded (the dynamic linker's, the
#: interpreter's): a secret under such a name would put a random string in their place.
PROGRAM_VARIABLES = frozenset({"PATH"})
PROGRAM_PREFIXES = ("LD_", "PYTHON")
DEFAULT_DATA_DIR = "~/.local/share/hearthlink"

#: ``max_memory`` suffixes: binary multiples, as the kernel's and compose's ``512M`` mean.
MEMORY_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}
MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]?)\s*$", re.IGNORECASE)


def parse_memory(value: object) -> int | None:
    """``max_memory`` in bytes: ``"512M"`` (K, M, G: binary multiples), ``"1.5G"``, or a
    number of bytes (an int, or a string without a suffix); ``""`` means no limit (None).

    Raises:
        ValueError: anything else, or a size that is not above 0.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError('give a size such as "512M" (K, M or G), or a number of bytes')
    if isinstance(value, int):
        size = value
    elif not value.strip():
        return None
    else:
        match = MEMORY_RE.match(value)
        if match is None:
            raise ValueError(
                f'{value!r} is not a size: give a number with K, M or G ("512M"), or bytes'
            )
        amount = float(match.group(1)) * MEMORY_UNITS[match.group(2).upper()]
        if not math.isfinite(amount):  # thousands of digits
            raise ValueError(f"{value[:20]!r}… is not a size a machine has")
        size = int(amount)
    if size <= 0:
        raise ValueError("must be more than 0 bytes")
    return size


NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]


def toml_key(name: str) -> str:
    """``name`` as one part of a dotted key in a message: bare when TOML allows it, else
    quoted with escapes, so a name holding a dot or a newline cannot blur the line."""
    return name if BARE_KEY_RE.fullmatch(name) else json.dumps(name)


#: TOML has real booleans, integers and floats: nothing is coerced (``port = true`` is not
#: port 1, ``critical = "yes"`` is not true), and no duration is ``inf`` or ``nan``.
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class _Section(BaseModel):
    model_config = _STRICT


class SupervisorSection(_Section):
    data_dir: str = DEFAULT_DATA_DIR
    control_socket: str = ""
    stop_timeout: NonNegative = 10.0
    log_dir: str = ""
    #: The interpreter for ``script`` services and ``{python}``; "" = the one running hearthlink.
    python: str = ""
    #: Size at which a service's log file is rotated, and how many old files are kept.
    log_max_bytes: Annotated[int, Field(ge=1024)] = 10 * 1024 * 1024
    log_backups: Annotated[int, Field(ge=0)] = 3
    #: A dotenv file read for every service ("" = none).
    env_file: str = ""
    #: How long a hook (post_start, pre_stop, on_failure) may run before it is killed.
    hook_timeout: Positive = 10.0


class HealthSection(_Section):
    startup_interval: Positive = 5.0
    startup_period: NonNegative = 60.0
    steady_interval: Positive = 30.0
    timeout: Positive = 5.0
    failure_threshold: Annotated[int, Field(ge=1)] = 3


class RestartSection(_Section):
    max_attempts: Annotated[int, Field(ge=0)] = 5
    initial_backoff: NonNegative = 1.0
    max_backoff: NonNegative = 30.0
    stable_after: NonNegative = 10.0


Condition = Literal["started", "healthy", "completed"]
PROBE_KINDS = ("http", "tcp", "exec", "log")


class ProbeTable(_Section):
    """One probe, as a table: ``{ http = "/path", status = 200, json = false }``,
    ``{ tcp = true }``, ``{ exec = ["prog", "arg"] }`` or ``{ log = "regex" }``."""

    model_config = ConfigDict(**_STRICT, populate_by_name=True)

    http: str | None = None
    status: Annotated[int, Field(ge=100, le=599)] | None = None
    json_body: bool | None = Field(default=None, alias="json")
    tcp: bool | None = None
    exec: list[str] | None = None
    log: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ProbeTable:
        given = [kind for kind in PROBE_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of http, tcp, exec or log"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if given != ["http"] and (self.status is not None or self.json_body is not None):
            raise ValueError("status and json go with an http probe only")
        if self.http is not None and not self.http.startswith("/"):
            raise ValueError("the http probe's path must start with '/'")
        if self.tcp is False:
            raise ValueError("tcp must be true (or give another probe)")
        if self.exec is not None and not self.exec:
            raise ValueError("the exec probe needs a program")
        if self.log is not None:
            try:
                re.compile(self.log)
            except re.error as exc:
                raise ValueError(
                    f"the log probe's pattern is not a regular expression: {exc}"
                ) from None
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in PROBE_KINDS if getattr(self, kind) is not None)


def _table_or_not(value: Any) -> str:
    return "table" if isinstance(value, dict) else "plain"


#: A probe is a name ("http", "none") or a table; errors name only the form given.
ProbeSetting = Annotated[
    Annotated[str, Tag("plain")] | Annotated[ProbeTable, Tag("table")],
    Discriminator(_table_or_not),
]


class DependencyTable(_Section):
    """One dependency as a table: ``{ condition = "healthy", restart = true }``."""

    condition: Condition = "healthy"
    #: Restart the dependent whenever this dependency is restarted, once it is healthy again.
    restart: bool = False


#: One dependency's setting in a ``depends_on`` table: a condition, or a table.
DependencySetting = Annotated[
    Annotated[Condition, Tag("plain")] | Annotated[DependencyTable, Tag("table")],
    Discriminator(_table_or_not),
]
#: Dependencies: a list of names, or a table of name = condition (or a DependencyTable).
DependsOn = Annotated[
    Annotated[list[str], Tag("plain")] | Annotated[dict[str, DependencySetting], Tag("table")],
    Discriminator(_table_or_not),
]
#: The tags above, left out of the key named in an error line.
UNION_TAGS = frozenset({"plain", "table"})


class ServiceSection(_Section):
    script: str | None = None
    command: list[str] | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    kind: Literal["service", "task"] = "service"
    #: "always" (a service's default), "on-failure" (a task's default) or "never".
    restart: Literal["always", "on-failure", "never"] | None = None
    #: "http", "none" or a ProbeTable; a service's default is "http", a task is not probed.
    probe: ProbeSetting | None = None
    env_file: str = ""
    user: str = ""
    kill_mode: Literal["group", "mixed"] = "group"
    replicas: Annotated[int, Field(ge=1, le=1000)] = 1
    #: The container image, read only by ``hearthlink export``.
    image: str = ""
    host: str = "127.0.0.1"
    allow_external: bool = False
    health_path: str = "/health"
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str = ""
    depends_on: DependsOn = Field(default_factory=list)
    stop_timeout: NonNegative | None = None
    stop_signal: str = "SIGTERM"
    critical: bool = False
    #: Environment variable -> file in the data dir holding a generated secret.
    secrets: dict[str, str] = Field(default_factory=dict)
    #: Globs (gitignore-style, relative to cwd): a change to a matching file restarts it.
    watch: list[str] = Field(default_factory=list)
    #: Globs never watched, on top of the built-in ignores.
    watch_ignore: list[str] = Field(default_factory=list)
    #: The supervisor binds host:port once and passes the listening socket (fd 3).
    socket: bool = False
    #: With socket: "rolling" (new beside old) or "recreate" (old stopped first).
    strategy: Literal["rolling", "recreate"] | None = None
    #: With probe = "notify": seconds between the WATCHDOG=1 pings expected (0: none).
    watchdog: NonNegative = 0.0
    #: Started only when one of these profiles is selected, or when named.
    profiles: list[Annotated[str, Field(pattern=PROFILE_RE)]] = Field(default_factory=list)
    #: false removes the service (an override file switching one off); dropped before
    #: validation, so a table that only says ``enabled = false`` needs nothing else.
    enabled: StrictBool = True
    #: A task only: a 5-field cron expression (local time) or "every N" seconds.
    schedule: str = ""
    #: Hooks: argv run once each process is healthy, before its stop signal, on giving up.
    post_start: list[str] = Field(default_factory=list)
    pre_stop: list[str] = Field(default_factory=list)
    on_failure: list[str] = Field(default_factory=list)
    #: Overrides [supervisor] hook_timeout for this service.
    hook_timeout: Positive | None = None
    #: Restarted when its memory stays above this: "512M" (K, M, G) or bytes; "" = no limit.
    max_memory: int | str = ""

    @field_validator("max_memory", mode="before")
    @classmethod
    def _memory_size(cls, value: object) -> object:
        parse_memory(value)  # raises, naming the problem; the file's form is kept
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: dict[str, str]) -> dict[str, str]:
        for var, filename in value.items():
            if not ENV_NAME_RE.fullmatch(var):
                raise ValueError(f"{var!r} is not an environment variable name")
            if var in RESERVED_VARIABLES or (
                var.startswith("HEARTHLINK_") and var.endswith("_URL")
            ):
                raise ValueError(f"{var!r} is set by hearthlink itself")
            if var in PROGRAM_VARIABLES or var.startswith(PROGRAM_PREFIXES):
                raise ValueError(
                    f"{var!r} would replace a variable that controls how programs run "
                    "(PATH and names starting with LD_ or PYTHON are refused)"
                )
            if not SECRET_FILE_RE.fullmatch(filename):
                raise ValueError(
                    f"file {filename!r} for {var} must be a plain file name inside the data "
                    "dir (letters, digits, '.', '_' and '-')"
                )
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for var in value:
            if not var or "=" in var:
                raise ValueError(f"{var!r} is not an environment variable name (empty or has '=')")
        return value

    @field_validator("stop_signal")
    @classmethod
    def _known_signal(cls, value: str) -> str:
        name = value.upper()
        if not name.startswith("SIG"):
            name = "SIG" + name
        if not isinstance(getattr(signal, name, None), signal.Signals):
            raise ValueError(f"unknown signal {value!r} (use a name like SIGTERM or SIGINT)")
        return name

    @field_validator("probe")
    @classmethod
    def _probe_name(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in ("http", "none", "notify"):
            raise ValueError(
                f'unknown probe {value!r} (use "http", "none", "notify" or a table such as '
                "{ tcp = true })"
            )
        return value

    @property
    def conditions(self) -> dict[str, str]:
        """Each dependency with its condition (a plain list means "healthy")."""
        if isinstance(self.depends_on, dict):
            return {
                name: setting.condition if isinstance(setting, DependencyTable) else setting
                for name, setting in self.depends_on.items()
            }
        return {name: "healthy" for name in self.depends_on}

    @property
    def restarts_with(self) -> list[str]:
        """The dependencies whose restarts restart this service (``restart = true``)."""
        if not isinstance(self.depends_on, dict):
            return []
        return [
            name
            for name, setting in self.depends_on.items()
            if isinstance(setting, DependencyTable) and setting.restart
        ]

    @field_validator("watch", "watch_ignore")
    @classmethod
    def _relative_globs(cls, value: list[str]) -> list[str]:
        for glob in value:
            problem = glob_problem(glob)
            if problem:
                raise ValueError(f"{glob!r}: {problem}")
        return value

    @field_validator("health_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @field_validator("command")
    @classmethod
    def _non_empty(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _script_or_command(self) -> ServiceSection:
        if (self.script is None) == (self.command is None):
            raise ValueError("give exactly one of 'script' or 'command'")
        return self


def glob_problem(glob: str) -> str | None:
    """What is wrong with a ``watch`` glob (relative to the service's cwd), or None."""
    if not glob.strip():
        return "an empty glob matches nothing"
    if glob.startswith("~") or ".." in glob.split("/"):
        return "globs are relative to the service's cwd and stay under it (no '~' or '..')"
    if any(ord(char) < 0x20 or char == "\x7f" for char in glob):
        return "control characters are not allowed in a glob"
    import pathspec  # only for a config that watches something

    try:
        pathspec.GitIgnoreSpec.from_lines([glob])
    except ValueError as exc:
        return f"not a gitignore-style glob ({exc})"
    return None


class ConfigFile(_Section):
    supervisor: SupervisorSection = SupervisorSection()
    health: HealthSection = HealthSection()
    restart: RestartSection = RestartSection()
    services: dict[str, ServiceSection] = Field(default_factory=dict)

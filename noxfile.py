"""nox sessions: tests on every supported Python, lint, typecheck, bench."""

from __future__ import annotations

import os
from pathlib import Path

import nox

PYTHONS = ["3.11", "3.12", "3.13"]


def _find_pyenv_interpreters() -> None:
    # pyenv's shims answer only for the selected version; put every installed 3.11-3.13
    # on PATH so the matrix finds them, and never let uv download an interpreter instead.
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    extra = [
        str(bin_dir)
        for version in PYTHONS
        for bin_dir in sorted(root.glob(f"{version}.*/bin"))[-1:]
    ]
    if extra:
        os.environ["PATH"] = os.pathsep.join([*extra, os.environ.get("PATH", "")])
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")


_find_pyenv_interpreters()

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    # The tests start hundreds of service processes. With PYTHONDONTWRITEBYTECODE set (as
    # some shells do) nothing would ever be cached and each start would compile FastAPI and
    # pydantic from source again: compile everything once, up front.
    session.env["UV_COMPILE_BYTECODE"] = "1"
    session.install("-e", ".[dev]")
    session.run("python", "-m", "compileall", "-q", "src", "tests", silent=True)
    # Two workers, one per core: most tests wait on real processes, sockets and signals,
    # so the suite takes about half the time (each worker has its own leak check).
    session.run("pytest", "-n", "2", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install("ruff", "import-linter")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # The layers (pyproject.toml [tool.importlinter]), read from the source: no install needed.
    session.run("lint-imports", env={"PYTHONPATH": "src"})


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmark (bench/run.py): the performance budgets; not in the default sessions."""
    session.install("-e", ".")
    session.run("python", "bench/run.py", *session.posargs)

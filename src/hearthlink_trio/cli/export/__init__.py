"""``hearthlink export``: the config as a compose file or Kubernetes manifests, and the
Dockerfile of the bundled services' image.

Everything is computed before anything is written: a config that cannot be exported is
refused with one line per problem (:class:`~hearthlink_trio.errors.ConfigError`, exit 2)
and no file is touched. No secret value is read or written: secrets are referenced by name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from hearthlink_trio.cli.export.compose import render_compose
from hearthlink_trio.cli.export.dockerfile import render_dockerfile
from hearthlink_trio.cli.export.kubernetes import render_kubernetes
from hearthlink_trio.cli.export.mapping import plan_export

__all__ = ["export_compose", "export_kubernetes", "render_dockerfile", "write_output"]


def export_compose(path: Path, environ: Mapping[str, str] | None = None) -> str:
    """The compose file of the config at ``path``.

    Raises:
        ConfigError: the config is invalid or cannot run under compose.
    """
    return render_compose(plan_export(path, "compose", environ))


def export_kubernetes(
    path: Path, environ: Mapping[str, str] | None = None, *, namespace: str | None = None
) -> str:
    """The Kubernetes manifests of the config at ``path``.

    Raises:
        ConfigError: the config is invalid or cannot run on Kubernetes.
    """
    return render_kubernetes(plan_export(path, "kubernetes", environ), namespace=namespace)


def write_output(text: str, output: Path | None) -> None:
    """``text`` to ``output`` (replaced whole, never left half-written), or to stdout."""
    if output is None:
        print(text, end="")
        return
    folder = output.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

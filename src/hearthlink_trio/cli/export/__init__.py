"""``hearthlink export``: the config as a compose file or Kubernetes manifests, and the
Dockerfile of the bundled services' image.

Everything is computed before anything is written: a config that cannot be exported is
refused with one line per problem (:class:`~hearthlink_trio.errors.ConfigError`, exit 2)
and no file is touched. No secret value is read or written: secrets are referenced by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from hearthlink_trio.cli.export.compose import render_compose
from hearthlink_trio.cli.export.dockerfile import render_dockerfile
from hearthlink_trio.cli.export.kubernetes import KUBECTL_IMAGE, render_kubernetes
from hearthlink_trio.cli.export.mapping import plan_export

__all__ = [
    "KUBECTL_IMAGE",
    "export_compose",
    "export_kubernetes",
    "render_dockerfile",
    "write_output",
]


def export_compose(path: Path | Sequence[Path], environ: Mapping[str, str] | None = None) -> str:
    """The compose file of the config at ``path`` (one file, or several merged).

    Raises:
        ConfigError: the config is invalid or cannot run under compose.
    """
    return render_compose(plan_export(path, "compose", environ))


def export_kubernetes(
    path: Path | Sequence[Path],
    environ: Mapping[str, str] | None = None,
    *,
    namespace: str | None = None,
    kubectl_image: str = KUBECTL_IMAGE,
) -> str:
    """The Kubernetes manifests of the config at ``path`` (one file, or several merged).

    Raises:
        ConfigError: the config is invalid or cannot run on Kubernetes.
    """
    return render_kubernetes(
        plan_export(path, "kubernetes", environ), namespace=namespace, kubectl_image=kubectl_image
    )


def write_output(text: str, output: Path | None) -> int:
    """Print ``text``, or write it as the file ``output`` (created whole or not at all,
    replacing what was there).

    Returns:
        The exit code: 0, or 1 when the file cannot be written (the reason on stderr).
    """
    if output is None:
        print(text, end="")
        return 0
    from hearthlink_trio.cli.importing import write_new

    return write_new(text, output, force=True)

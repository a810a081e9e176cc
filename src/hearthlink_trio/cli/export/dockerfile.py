"""The Dockerfile of the bundled services' image (``hearthlink export dockerfile``).

The image is this package installed in a slim Python image, run as an unprivileged user,
with ``python -m`` as its entrypoint: the command names the service module, e.g.
``hearthlink_trio.services.vault --host 0.0.0.0 --port 8001``. It has no HEALTHCHECK: the
compose file and the Kubernetes manifests probe each service themselves.
"""

from __future__ import annotations

from hearthlink_trio import __version__
from hearthlink_trio.cli.export.kubernetes import BUNDLED_UID
from hearthlink_trio.cli.export.mapping import (
    BUNDLED_IMAGE,
    BUNDLED_MODULE_PREFIX,
    DATA_PATH,
    bundled_ports,
    comment,
    header,
)

#: The base image: the oldest Python the package supports is 3.11; a current one is used.
BASE_IMAGE = "python:3.12-slim"


def render_dockerfile() -> str:
    """The Dockerfile text; its build context is a clone of this repository."""
    ports = " ".join(str(port) for port in bundled_ports())
    lines = [
        *header(None, "dockerfile"),
        "",
        f"The image of the bundled services. From a clone of hearthlink {__version__}:",
        f"  docker build -t {BUNDLED_IMAGE} .",
        "(a .dockerignore holding .venv keeps the build context small). Each container runs",
        "one service, named by its module:",
        f"  docker run -p 127.0.0.1:8001:8001 {BUNDLED_IMAGE} \\",
        f"      {BUNDLED_MODULE_PREFIX}vault --host 0.0.0.0 --port 8001",
    ]
    return comment(lines) + "\n".join(
        [
            f"FROM {BASE_IMAGE}",
            "",
            "ENV PYTHONDONTWRITEBYTECODE=1 \\",
            "    PYTHONUNBUFFERED=1 \\",
            "    PIP_NO_CACHE_DIR=1 \\",
            "    PIP_DISABLE_PIP_VERSION_CHECK=1",
            "",
            "WORKDIR /src",
            "COPY pyproject.toml README.md ./",
            "COPY src ./src",
            "RUN pip install . && rm -rf /src",
            "",
            f"RUN groupadd --system --gid {BUNDLED_UID} hearthlink \\",
            f"    && useradd --system --uid {BUNDLED_UID} --gid {BUNDLED_UID} \\",
            f"       --home-dir {DATA_PATH} --no-create-home hearthlink \\",
            f"    && mkdir {DATA_PATH} && chown {BUNDLED_UID}:{BUNDLED_UID} {DATA_PATH}",
            f"ENV HEARTHLINK_DATA_DIR={DATA_PATH}",
            f"WORKDIR {DATA_PATH}",
            f"USER {BUNDLED_UID}:{BUNDLED_UID}",
            "",
            f"EXPOSE {ports}",
            'ENTRYPOINT ["python", "-m"]',
            "",
        ]
    )

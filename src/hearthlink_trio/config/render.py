"""The merged, validated config written back as TOML (``hearthlink config``)."""

from __future__ import annotations

from typing import Any

import tomli_w

from hearthlink_trio.config.model import ConfigFile

__all__ = ["render_toml"]


def render_toml(parsed: ConfigFile) -> str:
    """``parsed`` as TOML, every key with its value in effect (defaults included, but for
    empty tables and arrays).

    The order is stable: the tables and keys in the order the file model declares them,
    the services by name. Paths are as written (relative ones resolve against the first
    file's folder), and ``enabled`` is left out: a service switched off is not there.
    """
    # The probe is a union told apart by a callable tag, which pydantic cannot serialise
    # without a warning; the value it writes is right.
    data: dict[str, Any] = parsed.model_dump(
        mode="json", by_alias=True, exclude_none=True, warnings=False
    )
    services = data.pop("services")
    # An empty table or array is the default wherever one is allowed: left out, it would
    # only add empty [services.NAME.env] headers.
    data["services"] = {
        name: {
            key: value for key, value in table.items() if key != "enabled" and value not in ({}, [])
        }
        for name, table in sorted(services.items())
    }
    return tomli_w.dumps(data)

"""What every service accepts as a name, a message and a JSON body."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path as PathParam

#: Names of namespaces, keys, plugins, actions and session ids.
NAME_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
#: A path parameter holding a name; anything else is answered 422.
Name = Annotated[str, PathParam(pattern=NAME_PATTERN)]
#: Longest message, in characters, Core accepts and Alden answers (one limit for both, so
#: every message Core takes can get a reply).
MAX_MESSAGE_CHARS = 32 * 1024
#: The ``detail`` of the 400 for a body not declared as JSON.
NOT_JSON_DETAIL = "the body must be UTF-8 JSON (Content-Type: application/json)"


def is_json_content_type(content_type: str) -> bool:
    """``application/json`` (or ``application/*+json``), with no charset or a UTF-8 one."""
    media_type, *params = content_type.split(";")
    media_type = media_type.strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True

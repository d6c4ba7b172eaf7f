"""A spec's validation errors as ``{"loc": "<field path>", "msg", "type"}`` details, without the server.

The service's 422s and the client's ``SpecFileError`` (a local spec file checked before it is sent) both use
``validation_details``; this module needs pydantic only, so a client-only install can import it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

__all__ = ["loc_to_path", "validation_details"]


def loc_to_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "losses", 1, "focal", "gamma")`` -> ``"losses[1].focal.gamma"``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_PATH_PREFIX = re.compile(
    r"^(?:Value error, )?([A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?(?:\.[A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?)*): "
)


def _clean_loc(loc: tuple[Any, ...], data: Any, err_type: str) -> list[Any]:
    """Drop pydantic's union labels from a loc: the discriminator tag ('focal') and member names ('Choice')."""
    out: list[Any] = []
    cur = data
    for i, part in enumerate(loc):
        if isinstance(cur, list) and isinstance(part, int):
            out.append(part)
            cur = cur[part] if 0 <= part < len(cur) else None
        elif isinstance(cur, dict):
            if part in cur:
                out.append(part)
                cur = cur[part]
            elif part == cur.get("name"):
                continue  # the discriminated union's tag
            elif i == len(loc) - 1 and err_type == "missing":
                out.append(part)
            # else: a union member's label; the value is still `cur`
        else:
            break  # a scalar: what follows labels union members
    return out


def validation_details(exc: ValidationError, data: Any) -> list[dict[str, str]]:
    details: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        msg = str(err.get("msg", ""))
        loc = loc_to_path(_clean_loc(tuple(err.get("loc", ())), data, str(err.get("type", ""))))
        match = _PATH_PREFIX.match(msg)
        if match and not loc:
            loc, msg = match.group(1), msg[match.end() :]
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        key = (loc, msg)
        if key not in seen:
            seen.add(key)
            details.append({"loc": loc, "msg": msg, "type": str(err.get("type", ""))})
    return details

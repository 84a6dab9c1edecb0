"""PHP-style bracketed form data, the wire format of Bitrix24 events and batch commands.

Bitrix24 posts `auth[member_id]=...&data[CALL_ID]=...`; batch sub-commands are query strings
in the same notation (PHP's http_build_query / parse_str).
"""

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from bitrixapp.storable import MAX_DEPTH, shorten

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


class FormDataError(ValueError):
    """The form cannot be read as bracketed fields; the message names the field."""

    def __init__(self, detail: str, field: str):
        super().__init__(detail)
        self.field = shorten(field)


def parse_bracketed(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """`[("auth[domain]", "x")]` -> `{"auth": {"domain": "x"}}`; `a[]=1&a[]=2` -> list."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        match = _KEY.match(key)
        if not match:
            raise FormDataError(f"malformed field name {shorten(key)!r}", key)
        path = [match.group(1), *_PART.findall(match.group(2))]
        if len(path) > MAX_DEPTH:
            # The tree is built without recursion, but storing it (JSON) recurses.
            raise FormDataError(
                f"field {shorten(key)!r} is nested deeper than {MAX_DEPTH} levels", key
            )
        _assign(root, path, value, key)
    return root


def _assign(node: Any, path: list[str], value: str, key: str) -> None:
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            if part != "":
                raise FormDataError(f"field {shorten(key)!r} mixes list and keyed items", key)
            if last:
                node.append(value)
                return
            node.append({} if path[i + 1] != "" else [])
            node = node[-1]
            continue
        if last:
            if isinstance(node.get(part), dict | list):
                raise FormDataError(f"field {shorten(key)!r} is both a value and a group", key)
            node[part] = value
            return
        child = node.setdefault(part, [] if path[i + 1] == "" else {})
        if not isinstance(child, dict | list):
            raise FormDataError(f"field {shorten(key)!r} is both a value and a group", key)
        node = child


class Raw(str):
    """A value written into a query string as is (e.g. a batch `$result[...]` reference)."""


def php_query(params: Mapping[str, Any]) -> str:
    """Encode params like PHP's http_build_query, nested dicts and lists as brackets."""
    return "&".join(f"{k}={v}" for k, v in _flatten(params, ""))


def _flatten(value: Any, prefix: str) -> list[tuple[str, str]]:
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        return [(prefix, _scalar(value))]
    out: list[tuple[str, str]] = []
    for key, child in items:
        name = (
            quote(str(key), safe="") if not prefix else f"{prefix}%5B{quote(str(key), safe='')}%5D"
        )
        out.extend(_flatten(child, name))
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return quote(str(value), safe="")

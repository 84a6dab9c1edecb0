"""Can a decoded request body be stored as it is? One walk over the tree finds what cannot.

Bodies are kept in PostgreSQL text and jsonb columns, and what PostgreSQL refuses surfaces
only at INSERT time, as a 500 (`DataError`) after the request was accepted. So every inbound
body is checked right after decoding, and the first problem is answered as a 400 naming the
field:

- a NUL character: PostgreSQL text and jsonb cannot hold U+0000;
- a lone surrogate (`"\\ud800"` is valid JSON): it has no UTF-8 form, the driver cannot send it;
- a number that is not finite (`1e400` decodes to infinity): jsonb has no infinity;
- nesting deeper than MAX_DEPTH: no Bitrix24 or PBX payload is more than a few levels deep,
  and the JSON encoder, the database driver and our own code all recurse over the tree.

The walk is iterative, so a hostile depth cannot exhaust the stack here.
"""

import math
import re
from dataclasses import dataclass
from typing import Any

# Bitrix24 events nest 3 levels (data[FIELDS][PHONE][0][VALUE] at most), Mango 2.
MAX_DEPTH = 16

_UNSTORABLE_CHAR = re.compile("[\x00\ud800-\udfff]")

Path = tuple[str, ...]


@dataclass(frozen=True)
class Problem:
    path: Path  # keys from the root to the offending value or key
    reason: str  # what is wrong, in words for the error detail


def find_problem(tree: Any, max_depth: int = MAX_DEPTH) -> Problem | None:
    """The first thing in `tree` that cannot be stored, or None when all of it can."""
    stack: list[tuple[Path, Any]] = [((), tree)]
    while stack:
        path, node = stack.pop()
        if len(path) > max_depth:
            return Problem(path[: max_depth + 1], f"is nested deeper than {max_depth} levels")
        problem = _scalar_problem(node)
        if problem:
            return Problem(path, problem)
        for key, child in _children(node):
            if _text_problem(key):
                return Problem((*path, key), "has a name that " + _text_problem(key))
            stack.append(((*path, key), child))
    return None


def _children(node: Any) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [(str(k), v) for k, v in node.items()]
    if isinstance(node, list | tuple):
        return [(str(i), v) for i, v in enumerate(node)]
    return []


def _scalar_problem(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return "is not a finite number"
    if isinstance(value, str):
        return _text_problem(value)
    return ""


def _text_problem(text: str) -> str:
    found = _UNSTORABLE_CHAR.search(text)
    if found is None:
        return ""
    if found.group() == "\x00":
        return "contains a NUL character"
    return "contains a lone UTF-16 surrogate (not valid Unicode)"


def bracketed(path: Path) -> str:
    """`("auth", "member_id")` -> `auth[member_id]`, the way Bitrix24 names form fields."""
    if not path:
        return "body"
    return path[0] + "".join(f"[{part}]" for part in path[1:])


def shorten(name: str, limit: int = 80) -> str:
    """Field names are echoed in answers; a hostile 20 KB name is cut for the detail."""
    return name if len(name) <= limit else name[:limit] + "..."

"""Markdown tables, numbers as text, and dotted paths into nested dicts: the helpers every report,
README section and gate verdict is written with.

The tables are written compactly (`| a | b |`, no padding), so a regenerated file changes only
where a figure did.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_ALIGN = {"l": "---", "r": "---:", "c": ":---:"}
_MISSING = object()


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[str]], align: str = "") -> str:
    """A markdown table: `head`, then one line per row; `align` holds one of l, r, c per column
    (left where it stops short)."""
    _check_align(align, len(head))
    rule = "|" + "|".join(_ALIGN[a] for a in align.ljust(len(head), "l")) + "|"
    lines = [_row(head), rule]
    for i, row in enumerate(rows):
        if len(row) != len(head):
            raise ValueError(f"markdown_table: row {i} has {len(row)} cells, the head has {len(head)}")
        lines.append(_row(row))
    return "\n".join(lines)


def _check_align(align: str, columns: int) -> None:
    if len(align) > columns or set(align) - set(_ALIGN):
        raise ValueError(f"markdown_table: align {align!r} must be at most {columns} of l, r, c")


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def fmt(value: float | None, digits: int = 3, *, signed: bool = False, missing: str = "n/a") -> str:
    """`value` with `digits` decimals (and a sign with `signed`); `missing` for None."""
    if value is None:
        return missing
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def lookup(tree: Mapping, path: str, sep: str = ".") -> Any:
    """`tree["test"]["at_0.5"]["recall"]` for path "test.at_0.5.recall"; None where absent.

    A key may itself hold `sep` (metric names such as `at_0.5` do): the key that matches the path
    furthest wins.
    """
    found = _walk(tree, path, sep)
    return None if found is _MISSING else found


def _walk(node: Any, path: str, sep: str) -> Any:
    if not isinstance(node, Mapping):
        return _MISSING
    if path in node:
        return node[path]
    for key in sorted((k for k in node if isinstance(k, str)), key=len, reverse=True):
        if path.startswith(key + sep):
            found = _walk(node[key], path[len(key) + len(sep) :], sep)
            if found is not _MISSING:
                return found
    return _MISSING


def lookup_number(tree: Mapping, path: str, sep: str = ".") -> float | None:
    """`lookup` for figures: a finite number as float; None where absent or not one (bool, NaN, text)."""
    value = lookup(tree, path, sep)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"train": {"augment": {"zoom": 0.1}}} -> {"train.augment.zoom": 0.1}: the paths `lookup` reads."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat

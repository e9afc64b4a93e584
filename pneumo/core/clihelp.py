"""Readable `--help` at 80 columns for every pneumo command line (pneumo, pneumo.data.fetch, flows).

Tiny on purpose: flows/ imports it, and its help must start in a fraction of a second.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup


class HelpGroup(TyperGroup):
    """A command group whose help lists each command's first sentence whole, wrapped to the terminal.

    Click cuts it to one line with "..." (at 80 columns, most of pneumo's descriptions).
    """

    def format_commands(self, ctx: typer.Context, formatter: Any) -> None:  # Typer's vendored click HelpFormatter
        rows = [
            (name, cmd.get_short_help_str(limit=1_000))
            for name in self.list_commands(ctx)
            if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# Plain (click) help, not Typer's rich panels: at 80 columns those break choice lists mid-word
# ("ur l"), cut defaults with "…" and label every flag <bool>. Sub-apps inherit the markup mode.
HELP_SETTINGS: dict[str, Any] = {"rich_markup_mode": None, "cls": HelpGroup}

"""The one error type of `pneumo fetch`: its message names the file (or URL) and the problem."""

from __future__ import annotations


class FetchError(RuntimeError):
    """A source, archive, layout or DVC step was refused or failed; nothing was replaced."""

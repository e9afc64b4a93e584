"""`python -m pneumo` and the `pneumo` command: TensorFlow's start-up noise filtered, then the CLI."""

from __future__ import annotations


def main() -> None:
    from pneumo.quiet import filter_native_stderr

    filter_native_stderr()
    from pneumo.cli import app

    app(prog_name="pneumo")


if __name__ == "__main__":
    main()

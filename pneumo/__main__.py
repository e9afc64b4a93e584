"""`python -m pneumo` and the `pneumo` command: TensorFlow's start-up noise filtered, then the CLI."""

from __future__ import annotations


def main() -> None:
    from pneumo.cli.quiet import filter_native_stderr  # first: the filter must be up before TensorFlow loads

    filter_native_stderr()
    from pneumo.cli.app import app

    app(prog_name="pneumo")


if __name__ == "__main__":
    main()

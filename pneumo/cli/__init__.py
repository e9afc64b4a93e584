"""The `pneumo` command: thin Typer commands over the layers below."""

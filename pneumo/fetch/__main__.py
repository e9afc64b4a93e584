from pneumo.fetch.cli import make_app

make_app()(prog_name="python -m pneumo.fetch")

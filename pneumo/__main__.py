from pneumo.cli import app

app(prog_name="pneumo")

"""The DVC stages, one module each (dvc.yaml runs them through `python -m pneumo.cli.stages <stage>`)."""

"""The DVC stages, one module each (dvc.yaml calls them through `pneumo <stage>`)."""

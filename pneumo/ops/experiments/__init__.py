"""The experiment record: every `dvc exp run` scored, kept in a committed file, rendered as tables.

- `record`: runs read from `dvc exp show` and git into `experiments/records.json`;
- `rules`: the pre-registered selection rule (validation only) and what each lever did;
- `tables`: the markdown of `experiments/README.md` and the README's experiment section.

Re-scoring old runs from their cached models loads Keras, so it lives in `pneumo.stages.rescore`.
"""

from pneumo.core.tables import flatten
from pneumo.ops.experiments.record import RECORDS, default_params, fill_params, load, record, save
from pneumo.ops.experiments.rules import best_on_test, changes, compare_recipes, select, select_run
from pneumo.ops.experiments.tables import (
    TABLE,
    comparison_table,
    effects_table,
    recipes_table,
    render,
    summary,
    table,
    write_table,
)

__all__ = [
    "RECORDS",
    "TABLE",
    "best_on_test",
    "changes",
    "compare_recipes",
    "comparison_table",
    "default_params",
    "effects_table",
    "fill_params",
    "flatten",
    "load",
    "recipes_table",
    "record",
    "render",
    "save",
    "select",
    "select_run",
    "summary",
    "table",
    "write_table",
]

"""Markdown tables, numbers as text and dotted lookups: the shared helpers of every generated page."""

from __future__ import annotations

import math

import pytest

from pneumo.core.tables import flatten, fmt, lookup, lookup_number, markdown_table


def test_markdown_table_is_compact_and_aligns_columns():
    text = markdown_table(["metric", "champion", "verdict"], [["val.roc_auc", "0.9900", "pass"]], align="lr")
    assert text.splitlines() == ["| metric | champion | verdict |", "|---|---:|---|", "| val.roc_auc | 0.9900 | pass |"]
    assert markdown_table(["a"], []) == "| a |\n|---|"
    assert markdown_table(["a", "b"], [["1", "2"]], align="cc").splitlines()[1] == "|:---:|:---:|"


def test_markdown_table_refuses_ragged_rows_and_bad_alignment():
    with pytest.raises(ValueError, match="row 1 has 1 cells, the head has 2"):
        markdown_table(["a", "b"], [["1", "2"], ["3"]])
    with pytest.raises(ValueError, match="align 'x'"):
        markdown_table(["a"], [], align="x")
    with pytest.raises(ValueError, match="at most 1"):
        markdown_table(["a"], [], align="lr")


def test_fmt_rounds_signs_and_names_what_is_missing():
    assert fmt(0.98765) == "0.988"
    assert fmt(0.98765, 4) == "0.9877"
    assert fmt(0.02, signed=True) == "+0.020" and fmt(-0.02, signed=True) == "-0.020"
    assert fmt(None) == "n/a" and fmt(None, missing="-") == "-"


def test_lookup_walks_dotted_paths_even_through_keys_with_dots():
    metrics = {
        "val": {"roc_auc": 0.99, "at_0.5": {"recall": 0.9}, "at_0": {"5": {"recall": 0.1}}},
        "synthetic": False,
        "ci": [0.1, 0.2],
        "nan": math.nan,
    }
    assert lookup(metrics, "val.roc_auc") == 0.99
    # the key that matches furthest wins: "at_0.5", not "at_0" then "5"
    assert lookup(metrics, "val.at_0.5.recall") == 0.9
    assert lookup(metrics, "val/at_0.5/recall", sep="/") == 0.9
    assert lookup(metrics, "ci") == [0.1, 0.2]
    assert lookup(metrics, "val.missing") is None and lookup(metrics, "val.roc_auc.deeper") is None
    assert lookup_number(metrics, "val.roc_auc") == 0.99
    assert lookup_number(metrics, "synthetic") is None  # a flag is no figure
    assert lookup_number(metrics, "ci") is None and lookup_number(metrics, "nan") is None


def test_lookup_falls_back_when_the_longest_key_leads_nowhere():
    tree = {"a.b": {"x": 1}, "a": {"b": {"c": 2}}}
    assert lookup(tree, "a.b.c") == 2 and lookup(tree, "a.b.x") == 1


def test_flatten_gives_the_paths_lookup_reads():
    tree = {"train": {"augment": {"zoom": 0.1}, "seed": 42}, "gate": {"metrics": ["val.roc_auc"]}}
    flat = flatten(tree)
    assert flat == {"train.augment.zoom": 0.1, "train.seed": 42, "gate.metrics": ["val.roc_auc"]}
    assert all(lookup(tree, path) == value for path, value in flat.items())

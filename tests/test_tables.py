"""The one Markdown table renderer: a `|` or a line break in a cell cannot break the table."""
from __future__ import annotations

import pandas as pd

from pear_lens.tables import markdown_table


def test_a_dataframe_and_rows_give_the_same_table():
    df = pd.DataFrame({"model": ["a", "b"], "Δ": ["+1.0", "-2.0"]})
    text = markdown_table(df)
    assert text == "| model | Δ |\n|---|---|\n| a | +1.0 |\n| b | -2.0 |\n"
    assert markdown_table(["model", "Δ"], [("a", "+1.0"), ("b", "-2.0")]) == text


def test_pipes_and_line_breaks_stay_inside_their_cell():
    text = markdown_table(["answer"], [("Paris | Lyon\nor Nice",)])
    assert text.splitlines()[2] == "| Paris \\| Lyon or Nice |"
    assert all(line.count("|") - line.count("\\|") == 2 for line in text.splitlines())


def test_an_empty_table_says_so():
    assert markdown_table(pd.DataFrame({"a": []})) == "(nothing evaluated yet)\n"
    assert markdown_table(["a"], [], empty="") == "| a |\n|---|\n"
